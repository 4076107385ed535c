"""`GRPOLoop.update`: the same metrics as the per-micro-batch Python sums it used to make,
read back from the policy's device once per step instead of several times per micro-batch.

The device here is torch's `lazy` one (computes on the CPU, but any read of a value by the
host is a real sync of its graph, as on a GPU), so a read-back shows up where it happens.
"""

import copy
from pathlib import Path

import pytest
import torch

from llmforge.post import grpo
from llmforge.post.rl_loop import GRPOLoop, offpolicy_clipped
from llmforge.verifiers import Reward, Score, register
from tests.device_probe import host_reads, lazy_device

pytestmark = pytest.mark.usefixtures("one_thread")
LLMFORGE = str(Path(grpo.__file__).parents[1])
SETS = ["steps=1", "rollout.group_size=4", "rollout.prompts_per_step=2",
        "rollout.max_new_tokens=8", "rollout.dynamic_sampling=false", "optim.lr=0.01",
        "loss.offpolicy=icepop", "loss.kl_coef=0.1", "loss.mask_unparseable=false",
        "loss.mask_truncated=false", "reward.weights={test_rl_loop_length: 1.0}"]  # fmt: skip


@register("test_rl_loop_length")
class Length(Reward):
    def __call__(self, completion, sample, length=None):
        return Score(min(len(completion), 40) / 40)


def make_loop(model, tokenizer, tmp_path, micro_batch: int) -> GRPOLoop:
    from llmforge.config import load
    from llmforge.post.rl_config import RLConfig

    rows = [{"id": f"p{i}", "prompt": f"the king {i}", "reference": "0"} for i in range(4)]
    cfg = load(RLConfig, None, [*SETS, f"optim.micro_batch={micro_batch}"])
    return GRPOLoop(model, tokenizer, rows, cfg, tmp_path)


@pytest.fixture(scope="module")
def policy(tiny_model):
    from stages.rlvr import load_policy

    return load_policy(tiny_model)


@pytest.fixture
def batch(policy, tmp_path):
    """A sampled batch, its sampler log-probs moved so that IcePop masks some tokens."""
    loop = make_loop(copy.deepcopy(policy[0]), policy[1], tmp_path, 8)
    drawn = loop.next_batch()
    b = loop.batch_tensors(drawn.groups, drawn.temperature)
    noise = torch.randn(b["mask"].shape, generator=torch.Generator().manual_seed(0))
    b["sampler"] = b["sampler"] + 1.5 * noise * b["mask"]
    return b


def summed_per_micro_batch(loop: GRPOLoop, b: dict) -> dict:
    """The metrics as `update` summed them before: Python floats, micro-batch by micro-batch
    (its loss and grad norm on a copy of the policy, which it leaves untouched)."""
    model = copy.deepcopy(loop.model).train()
    totals = dict.fromkeys(("loss", "clip_frac_low", "clip_frac_high", "offpolicy_masked",
                            "offpolicy_clipped_frac", "entropy"), 0.0)  # fmt: skip
    live = b["mask"].sum().clamp(min=1)
    for rows in loop.chunks(b):
        logp, entropy = loop.token_logprobs(model, b, rows)
        with torch.no_grad():
            ref = loop.token_logprobs(loop.ref_model, b, rows)[0]
        loss, stats = grpo.policy_loss(logp, logp.detach(), b["adv"][rows], b["weights"][rows],
                                       loop.cfg.loss, b["sampler"][rows], ref)  # fmt: skip
        loss.backward()
        share = b["mask"][rows].sum() / live
        totals["loss"] += loss.item()
        totals["entropy"] += ((entropy * b["mask"][rows]).sum() / live).item()
        for key in ("clip_frac_low", "clip_frac_high"):
            totals[key] += float(stats[key]) * share.item()
        totals["offpolicy_masked"] += float(stats["offpolicy_masked"])
        clipped = offpolicy_clipped(logp, b["sampler"][rows], b["mask"][rows], loop.cfg.loss)
        totals["offpolicy_clipped_frac"] += float(clipped) / live.item()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), loop.cfg.optim.max_grad_norm)
    return {**totals, "grad_norm": float(grad_norm)}


def test_update_reports_the_metrics_it_always_did(policy, batch, tmp_path):
    loop = make_loop(copy.deepcopy(policy[0]), policy[1], tmp_path, micro_batch=3)
    assert len(loop.chunks(batch)) == 3
    expected = summed_per_micro_batch(loop, batch)
    assert expected["offpolicy_clipped_frac"] > 0 and expected["loss"] != 0  # all terms live
    assert loop.update(batch, None) == expected  # bit for bit


@pytest.fixture
def read_backs(monkeypatch) -> list[str]:
    return host_reads(monkeypatch, LLMFORGE)


def test_update_reads_its_device_back_once_per_step(policy, batch, tmp_path, read_backs):
    """Before: four copies to the CPU per micro-batch (log-probs and entropies of the policy
    and of the reference model; the `.item()`s then read CPU tensors), and the grad norm."""
    model = copy.deepcopy(policy[0]).to(lazy_device())
    loop = make_loop(model, policy[1], tmp_path, micro_batch=2)
    metrics = loop.update(batch, None)
    assert len(loop.chunks(batch)) == 4 and metrics["grad_norm"] > 0
    assert len(read_backs) == 1, read_backs  # the final .tolist()
