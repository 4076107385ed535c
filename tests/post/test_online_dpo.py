"""Online / semi-online DPO pieces: the DPO-family losses against hand values, the sampler
lagging the policy by up to sync_every steps, ties skipped, weight syncs into a separate
engine, and a resumed semi-online run equal to an uninterrupted one."""

import math

import pytest
import torch

from llmforge.gen import TransformersGenerator
from llmforge.post import online_dpo
from llmforge.post.online_dpo import OnlineArgs, Optim, Sampling, pair_loss
from llmforge.verifiers import Reward, Score

ROWS = [{"id": f"p{i}", "prompt": f"Say something about {w}.", "chat": True}
        for i, w in enumerate("king queen sword rose night day".split())]  # fmt: skip


class TheShare(Reward):
    """Share of 'the' among the words: random samples of a tiny model disagree on it."""

    def __call__(self, completion, sample, length=None):
        words = completion.split()
        return Score(sum(w == "the" for w in words) / max(len(words), 1))


class Constant(Reward):
    def __call__(self, completion, sample, length=None):
        return Score(0.5)


def test_pair_losses_match_hand_values():
    zero = torch.zeros(1)
    assert pair_loss(zero, zero, "sigmoid", 0.1).item() == pytest.approx(math.log(2))
    assert pair_loss(torch.tensor([2.0]), zero, "sigmoid", 0.5).item() == pytest.approx(
        math.log(1 + math.exp(-1.0))
    )
    assert pair_loss(zero, zero, "apo_zero", 0.1).item() == pytest.approx(1.0)
    assert pair_loss(zero, zero, "apo_down", 0.1).item() == pytest.approx(1.0)
    # IPO on per-token log-ratios: (4/2 - 3/3 - 1/(2*0.25))^2 = (1 - 2)^2
    ipo = pair_loss(torch.tensor([4.0]), torch.tensor([3.0]), "ipo", 0.25,
                    torch.tensor([2]), torch.tensor([3]))  # fmt: skip
    assert ipo.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="online DPO supports"):
        pair_loss(zero, zero, "kto", 0.1)


def _loop(tiny_model, work, sync_every=1, steps=4, reward=None, generator=None, save_every=100):
    from llmforge.post.trl_bridge import load_model

    policy, tok = load_model(tiny_model)
    ref = load_model(tiny_model)[0].eval().requires_grad_(False)
    online = OnlineArgs(enabled=True, sync_every=sync_every, prompts_per_step=3, max_rounds=2)
    optim = Optim(steps=steps, lr=3e-3, micro_batch=2, save_every=save_every, seed=1)
    sampling = Sampling(k=3, temperature=1.0, max_new_tokens=8)
    return online_dpo.OnlineDPO(policy, ref, tok, ROWS, reward or TheShare(), online, sampling,
                                optim, "sigmoid", 0.1, work, generator=generator)  # fmt: skip


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_semi_online_sampler_lags_until_each_sync(tiny_model, tmp_path):
    import copy

    loop = _loop(tiny_model, tmp_path, sync_every=3)
    start = copy.deepcopy(loop.policy)
    history = []
    for _ in range(3):
        history.append(loop.train_step())
        if loop.step < 3:
            assert _same(loop.sampler_model, start) and not _same(loop.policy, start)
    assert [m["synced"] for m in history] == [False, False, True]
    assert _same(loop.sampler_model, loop.policy)
    trained = [m for m in history if not m.get("skipped")]
    assert trained and all(m["reward_chosen"] > m["reward_rejected"] for m in trained)
    assert all(m["pairs"] <= 3 for m in history)


def test_online_samples_from_the_live_policy(tiny_model, tmp_path):
    loop = _loop(tiny_model, tmp_path, sync_every=1)
    assert loop.sampler_model is None and loop.generator.model is loop.policy


def test_ties_give_no_pairs_and_no_update(tiny_model, tmp_path):
    import copy

    loop = _loop(tiny_model, tmp_path, reward=Constant())
    start = copy.deepcopy(loop.policy)
    metrics = loop.train_step()
    assert metrics["skipped"] and metrics["pairs"] == 0 and metrics["sample_rounds"] == 2
    assert _same(loop.policy, start)


class CountingEngine(TransformersGenerator):
    """A separate sampling engine (as vLLM is) that counts the weight syncs it receives."""

    def __init__(self, model, tokenizer):
        super().__init__(model, tokenizer)
        self.syncs = []

    def sync_weights(self, state_dict, timeout_s):
        self.model.load_state_dict(state_dict)
        self.syncs.append(timeout_s)


def test_a_separate_engine_gets_weights_every_n_steps(tiny_model, tmp_path):
    from llmforge.post.trl_bridge import load_model

    engine = CountingEngine(*load_model(tiny_model))
    loop = _loop(tiny_model, tmp_path, sync_every=2, steps=4, generator=engine)
    loop.run()
    assert len(engine.syncs) == 2 and _same(engine.model, loop.policy)


def test_resumed_semi_online_run_equals_uninterrupted(tiny_model, tmp_path):
    straight = _loop(tiny_model, tmp_path / "a", sync_every=3, steps=4, save_every=2)
    straight.run()
    first = _loop(tiny_model, tmp_path / "b", sync_every=3, steps=4, save_every=2)
    first.run(until=2)  # "crash" after the step-2 checkpoint, between two syncs
    assert (tmp_path / "b" / "sampler-0000002.safetensors").is_file()
    resumed = _loop(tiny_model, tmp_path / "b", sync_every=3, steps=4, save_every=2)
    assert resumed.resume() == 2 and resumed.stream.position == first.stream.position
    assert _same(resumed.sampler_model, first.sampler_model)  # the stale sampler, not the policy
    resumed.run()
    for a, b in zip(straight.policy.parameters(), resumed.policy.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
