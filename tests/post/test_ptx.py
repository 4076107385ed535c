"""The PTX loss during RL on a tiny random Llama: it keeps the held-out loss on the PTX data
lower than RL alone, its own term falls, its data position resumes exactly, and a PTX
input from another tokenizer is refused."""

import json
import types

import pytest
import torch

from llmforge.errors import BadInput
from tests.post.test_rl_async import Length  # noqa: F401  (registers test_async_length)

pytestmark = pytest.mark.usefixtures("one_thread")

SETS = [
    "checkpoint_every=2",
    "rollout.group_size=4",
    "rollout.prompts_per_step=2",
    "rollout.max_new_tokens=10",
    "rollout.dynamic_sampling=false",
    "optim.lr=0.003",
    "loss.mask_unparseable=false",
    "loss.mask_truncated=false",
    "reward.weights={test_async_length: 1.0, correct: 0.0, format: 0.0, overlong: 0.0}",
    "ptx.weight=1.0",
    "ptx.batch_size=4",
    "ptx.seq_len=64",
    "ptx.eval_every=0",
]


@pytest.fixture
def prompts(tmp_path):
    from tests.conftest import write_jsonl

    rows = [{"id": f"p{i}", "prompt": f"the king {i}", "reference": "0"} for i in range(6)]
    return write_jsonl(tmp_path / "rl.jsonl", rows)


def make_loop(tiny_model, tiny_tokens, prompts, work, steps, ptx=True):
    from llmforge.config import load
    from llmforge.post.ptx import PTXStream
    from llmforge.post.rl_config import RLConfig
    from llmforge.post.rl_data import read_prompts
    from llmforge.post.rl_loop import GRPOLoop
    from stages.rlvr import load_policy

    cfg = load(RLConfig, None, SETS + [f"steps={steps}"])
    model, tokenizer = load_policy(tiny_model)
    stream = PTXStream(tiny_tokens, cfg.ptx, cfg.seed, model, tokenizer) if ptx else None
    return GRPOLoop(model, tokenizer, read_prompts(prompts), cfg, work, ptx=stream)


def test_ptx_keeps_the_heldout_loss_lower_than_rl_alone(tiny_model, tiny_tokens, prompts, tmp_path):
    with_ptx = make_loop(tiny_model, tiny_tokens, prompts, tmp_path / "a", steps=8)
    without = make_loop(tiny_model, tiny_tokens, prompts, tmp_path / "b", steps=8, ptx=False)
    before = with_ptx.ptx.heldout_loss(with_ptx.model)
    history = with_ptx.run()
    without.run()
    kept = with_ptx.ptx.heldout_loss(with_ptx.model)
    lost = with_ptx.ptx.heldout_loss(without.model)
    assert kept < lost - 0.3 and kept < before - 0.3, (before, kept, lost)
    ptx = [m["ptx/loss"] for m in history]
    assert sum(ptx[-2:]) / 2 < sum(ptx[:2]) / 2 - 0.3, ptx  # the PTX term falls as RL runs
    assert all("reward_mean" in m for m in history)  # RL went on beside it


def test_resume_keeps_the_ptx_position(tiny_model, tiny_tokens, prompts, tmp_path):
    straight = make_loop(tiny_model, tiny_tokens, prompts, tmp_path / "a", steps=4)
    straight.run()
    first = make_loop(tiny_model, tiny_tokens, prompts, tmp_path / "b", steps=4)
    first.run(until=2)  # "crash" after the step-2 checkpoint
    resumed = make_loop(tiny_model, tiny_tokens, prompts, tmp_path / "b", steps=4)
    assert resumed.ptx.loader.rows == 0
    assert resumed.resume() == 2
    assert resumed.ptx.state_dict() == first.ptx.state_dict()
    resumed.run()
    assert resumed.ptx.state_dict() == straight.ptx.state_dict()
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_stage_logs_the_ptx_terms(tiny_model, tiny_tokens, prompts, tmp_path):
    from llmforge.stage import execute
    from stages.rlvr import STAGE

    sets = [s for s in SETS if not s.startswith("ptx.eval_every")] + ["steps=2", "ptx.eval_every=2"]
    out = execute(
        STAGE,
        [str(tiny_model), f"prompts={prompts}", f"ptx={tiny_tokens}"],
        sets=sets,
        out=tmp_path / "o",
    )
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(m["ptx/weight"] == 1.0 and m["ptx/loss"] > 0 for m in steps)
    assert [("ptx/heldout_loss" in m) for m in steps] == [True, True]  # step 1, then every 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["role"] for i in manifest["inputs"]] == ["model", "prompts", "ptx"]
    assert manifest["metrics"]["ptx_heldout_loss_first"] > 0


def test_tokens_of_another_tokenizer_are_refused(tiny_model, tiny_tokens):
    from llmforge.data.tokens import TokenStore
    from llmforge.post.ptx import check_vocab
    from stages.rlvr import load_policy

    model, tokenizer = load_policy(tiny_model)
    store = TokenStore(tiny_tokens, "train")
    check_vocab(store, model, tokenizer)  # the same tokenizer: fine
    other = types.SimpleNamespace(get_vocab=lambda: {**tokenizer.get_vocab(), "zzz": 10**6})
    with pytest.raises(BadInput, match="another tokenizer"):
        check_vocab(store, model, other)
    small = types.SimpleNamespace(
        get_input_embeddings=lambda: types.SimpleNamespace(num_embeddings=store.vocab_size - 1)
    )
    with pytest.raises(BadInput, match="embedding only"):
        check_vocab(store, small, tokenizer)


def test_bad_ptx_options_name_the_key():
    from llmforge.config import load
    from llmforge.errors import ConfigError
    from llmforge.post.rl_config import RLConfig

    with pytest.raises(ConfigError, match="weight"):
        load(RLConfig, None, ["ptx.weight=0"])
    with pytest.raises(ConfigError, match="seq_len"):
        load(RLConfig, None, ["ptx.seq_len=1"])
