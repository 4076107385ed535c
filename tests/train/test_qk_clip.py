"""MuonClip's QK-clip: the max-logit probe, the per-head rescaling (MHA, GQA, QK-norm, FSDP2)
and, in training, the largest logit held at tau where high-lr Muon lets it grow."""

import dataclasses
import json
import math

import pytest
import torch

from llmforge.data.batch_plan import BatchPlan
from llmforge.data.labelled_tokens import make_tokens
from llmforge.data.loader import Batch
from llmforge.model.attention import CausalMask, max_logits
from llmforge.model.gpt import GPT, ModelConfig
from llmforge.train import qk_clip as qc
from llmforge.train.config import OptimConfig, TrainConfig
from llmforge.train.engine import train_model
from llmforge.train.loop import Loop
from llmforge.train.optim import build_optimizers
from tests.gloo import on_two_ranks
from tests.train.engine_helpers import make_run, spec, tiny_model

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                  ffn_hidden=64, max_seq_len=64)  # fmt: skip
DOCS = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2], [3, 3, 3, 3, 3, 3, 4, 4, 4]])


def naive_max_logits(q, k, doc_ids):
    b, h, s, d = q.shape
    group = h // k.shape[1]
    best = torch.full((h,), -math.inf)
    for bi in range(b):
        for hi in range(h):
            for i in range(s):
                for j in range(i + 1):
                    if bool((doc_ids[bi, j : i + 1] == doc_ids[bi, i]).all()):
                        score = q[bi, hi, i] @ k[bi, hi // group, j] / math.sqrt(d)
                        best[hi] = max(best[hi], score)
    return best


@pytest.mark.parametrize("chunk", [2, 512])
def test_max_logits_matches_a_naive_loop_over_allowed_pairs(chunk):
    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 9, 8), torch.randn(2, 2, 9, 8)
    got = max_logits(q, k, CausalMask(9, DOCS), chunk=chunk)
    torch.testing.assert_close(got, naive_max_logits(q, k, DOCS))


def probe(model: GPT, batch: torch.Tensor) -> torch.Tensor:
    """Each layer's per-head largest logit on `batch` ([layers, heads])."""
    layers = qc.attention_layers(model)
    qc.arm(layers)
    model.train()
    with torch.no_grad():
        model(batch)
    return torch.stack([a.max_logit.clone() for a in layers])


@pytest.mark.parametrize(
    "features", [{"n_kv_heads": 4}, {"n_kv_heads": 2}, {"n_kv_heads": 1}, {"qk_norm": True}]
)
def test_clip_brings_each_head_over_tau_down_to_tau(features):
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(CFG, n_layers=1, **features))
    with torch.no_grad():
        model.layers[0].self_attn.q_proj.weight.mul_(torch.linspace(5, 40, 32)[:, None])
    batch = torch.randint(0, 64, (2, 16))
    before = probe(model, batch)[0]
    tau = float(before.median())
    assert (before > tau).any() and (before <= tau).any()
    clipped = qc.clip_attention_(model.layers[0].self_attn, before, tau)
    after = probe(model, batch)[0]
    assert clipped == int((before > tau).sum())
    if features.get("qk_norm"):  # one shared gain: every head scaled by the worst one's factor
        torch.testing.assert_close(after, before * tau / before.max())
    else:  # each head by exactly its own gamma; heads under tau untouched
        torch.testing.assert_close(after, torch.minimum(before, torch.tensor(tau)))


def test_gqa_factors_never_grow_a_weight_and_multiply_to_gamma():
    gamma = torch.tensor([1.0, 0.5, 0.25, 0.64])  # KV head 0: heads 0,1; KV head 1: heads 2,3
    q, k = qc.gqa_factors(gamma, n_kv_heads=2)
    torch.testing.assert_close(q * k.repeat_interleave(2), gamma)
    torch.testing.assert_close(k, torch.tensor([1.0, 0.8]))  # shrinks only if all heads clip
    assert (q <= 1).all()


class SameBatch:
    """A loader that serves one fixed batch forever (a model can only memorise it)."""

    def __init__(self, batch: Batch):
        self.batch = batch
        self.plan = BatchPlan(batch.inputs.shape[0])  # what the loop reads besides batches
        self.data_step = 0

    def micro_batches(self) -> int:
        return 1

    def next_batch(self) -> Batch:
        return self.batch


def train_muon(tau: float | None, steps: int) -> list[float]:
    """The largest logit each step's forward saw, Muon at lr 0.01 on random tokens."""
    torch.manual_seed(0)
    model = GPT(CFG)
    tokens = torch.randint(0, 64, (8, 33), generator=torch.Generator().manual_seed(1))
    batch = Batch(tokens[:, :-1], tokens[:, 1:], None, torch.zeros(8, 32, dtype=torch.long))
    optimizers = build_optimizers(model, OptimConfig(name="muon", lr=0.01, weight_decay=0.0))
    records = []
    cfg = TrainConfig(steps=steps, batch_size=8, seq_len=32, precision="fp32")
    clip = qc.QKClip(tau or math.inf, log_every=1)
    loop = Loop(model, model, optimizers, [], SameBatch(batch), steps, cfg, "unused", [clip],
                log_fn=records.append)  # fmt: skip
    loop._run()
    assert all(a.max_logit is None for a in clip.layers)  # the probe is off after training
    return [r["max_attn_logit"] for r in records]


def test_qk_clip_holds_the_largest_logit_at_tau_where_muon_lets_it_grow():
    tau, steps = 1.0, 80
    free = train_muon(None, steps)
    clipped = train_muon(tau, steps)
    assert free[0] < 0.1 * tau and free[-1] > 3 * tau  # unclipped: it keeps growing
    first = next(i for i, x in enumerate(clipped) if x > tau)
    assert clipped[:first] == pytest.approx(free[:first])  # identical until the first clip
    # Each clip uses the logit measured before that step's update (as in Kimi K2), so the
    # next forward may see at most one update's growth above tau, never a drift upward.
    assert max(clipped[first:]) < 1.2 * tau < free[-1] / 2.5


def test_engine_runs_qk_clip_and_logs_the_largest_logit(tmp_path):
    tokens = make_tokens(tmp_path / "tok", {"a": 20})
    base = spec(tokens, 2)
    optim = dataclasses.replace(base.optim, name="muon", qk_clip=100.0)
    run = make_run(tmp_path / "out")
    train_model(tiny_model(), dataclasses.replace(base, optim=optim), run)
    lines = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    probes = [x for x in lines if "max_attn_logit" in x]
    assert [x["step"] for x in probes] == [1, 2]
    assert all(0 < x["max_attn_logit"] < 100 and x["qk_clipped_heads"] == 0 for x in probes)


def _fsdp_worker(rank: int) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from llmforge.model.parallelize import parallelize

    result = {}
    for qk_norm in (False, True):
        cfg = dataclasses.replace(CFG, n_layers=1, qk_norm=qk_norm)
        models = []
        for wrap in (lambda m: m, parallelize):
            torch.manual_seed(0)
            models.append(wrap(GPT(cfg)))
            qc.clip_attention_(qc.attention_layers(models[-1])[0], HEAD_LOGITS, 1.0)
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = get_model_state_dict(models[1], options=options)
        plain = models[0].state_dict()
        result[qk_norm] = {k: (v, plain[k]) for k, v in full.items()}
    return result


HEAD_LOGITS = torch.tensor([0.5, 3.0, 2.0, 4.0])


def test_clip_on_fsdp2_sharded_weights_matches_the_plain_model(tmp_path):
    result = on_two_ranks(_fsdp_worker, tmp_path)[0]
    torch.manual_seed(0)
    untouched = GPT(dataclasses.replace(CFG, n_layers=1)).state_dict()
    for pairs in result.values():
        for sharded, plain in pairs.values():
            torch.testing.assert_close(sharded, plain, rtol=0, atol=0)
    q_plain = result[False]["layers.0.self_attn.q_proj.weight"][1]
    assert not torch.equal(q_plain, untouched["layers.0.self_attn.q_proj.weight"])
    assert result[True]["layers.0.self_attn.q_norm.weight"][1].max() < 1
