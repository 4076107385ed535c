"""The sft stage end to end on the tiny model: held-out loss and format compliance move,
the style check singles out a mismatched source, LoRA publishes a merged model, a crashed
run resumes to the uninterrupted result, and bad inputs exit 2 before any work."""

import json
import random

import pytest
import torch

from llmforge.errors import BadInput, RunFailed
from llmforge.stage import execute
from stages.sft import STAGE
from tests.conftest import write_jsonl

QUICK = [
    "style.enabled=false",
    "eval.format_prompts=0",
    "sft.heldout_fraction=0",
    "train.batch_size=2",
    "train.max_length=192",
    "train.warmup_ratio=0",
    "train.logging_steps=1",
]


@pytest.fixture(scope="module")
def chats(tmp_path_factory):
    from llmforge.data.synth import chat, splits

    root = tmp_path_factory.mktemp("chats")
    rng = random.Random(0)
    problems = splits.sample(rng, "train", 240, 1)
    return {
        "math": write_jsonl(root / "math.jsonl", chat.sft_rows(problems, rng)),
        "verbose": write_jsonl(root / "verbose.jsonl", chat.mismatched_rows(problems[:80])),
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model, chats):
    """A full fine-tune long enough to move loss and format (tiny model, high LR)."""
    sets = [
        "train.lr=0.005",
        "train.batch_size=8",
        "train.max_steps=100",
        "train.max_length=192",
        "sft.packing=false",
        "train.warmup_ratio=0",
        "train.save_steps=1000",
        "style.enabled=false",
        "eval.format_prompts=8",
        "eval.max_new_tokens=48",
    ]
    out = tmp_path_factory.mktemp("sft") / "sft"
    return execute(STAGE, [f"model={tiny_model}", f"math={chats['math']}"], sets=sets, out=out)


def metrics(path):
    return json.loads((path / "manifest.json").read_text())["metrics"]


@pytest.mark.slow
def test_sft_lowers_heldout_loss_and_teaches_format(trained):
    m = metrics(trained)
    assert m["heldout_loss_after"] < m["heldout_loss_before"] - 1.0
    before, after = m["format_before"], m["format_after"]
    assert sum(after.values()) > sum(before.values())
    assert m["steps"] == 100 and m["tokens"] > 0 and m["finetune"] == "full"
    lines = (trained / "metrics.jsonl").read_text().splitlines()
    assert any("loss" in json.loads(line) for line in lines)


@pytest.mark.slow
def test_published_model_loads_and_generates(trained):
    from llmforge.gen import TransformersGenerator

    gen = TransformersGenerator.from_pretrained(str(trained))
    (out,) = gen.generate(
        [[{"role": "user", "content": "What is 2 + 3?"}]], max_new_tokens=8, temperature=0.0
    )
    assert out[0].token_ids


@pytest.mark.slow
def test_style_check_ranks_the_mismatched_source_first(trained, chats):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmforge.post import chat_data, style_check

    model = AutoModelForCausalLM.from_pretrained(str(trained))
    tok = AutoTokenizer.from_pretrained(str(trained))
    sources = {n: chat_data.load_source(p) for n, p in chats.items()}
    scores = style_check.score_sources(model, tok, sources, rows_per_source=16)
    report = style_check.style_report(scores, z_threshold=2.0, min_gap=0.1)
    assert report[0]["source"] == "verbose" and report[0]["flagged"]
    assert not report[1]["flagged"]


def test_lora_publishes_a_merged_loadable_model(tmp_path, tiny_model, chats):
    from safetensors.torch import load_file

    sets = QUICK + ["lora.mode=lora", "lora.r=4", "train.max_steps=3", "train.lr=0.01"]
    out = execute(
        STAGE, [f"model={tiny_model}", str(chats["math"])], sets=sets, out=tmp_path / "lora"
    )
    assert metrics(out)["adapter"] == "merged" and not (out / "adapter").exists()
    new, old = load_file(out / "model.safetensors"), load_file(tiny_model / "model.safetensors")
    assert set(new) == set(old)  # a plain model: no lora_A/lora_B keys left
    changed = [k for k in old if "q_proj" in k and not torch.equal(new[k], old[k])]
    assert changed  # the merged adapter moved the attention weights
    assert torch.equal(new["model.embed_tokens.weight"], old["model.embed_tokens.weight"])


def test_crashed_run_resumes_to_the_uninterrupted_result(tmp_path, tiny_model, chats, monkeypatch):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from llmforge.post import trl_bridge

    sets = QUICK + ["train.max_steps=4", "train.save_steps=2", "train.lr=0.01"]
    items = [f"model={tiny_model}", f"math={chats['math']}"]
    clean = execute(STAGE, items, sets=sets, out=tmp_path / "clean")

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyError("simulated crash")

    real = trl_bridge.trainer_callback
    monkeypatch.setattr(trl_bridge, "trainer_callback", lambda *a: [real(*a), Crash()][1])
    with pytest.raises(RunFailed):
        execute(STAGE, items, sets=sets, out=tmp_path / "resumed")
    assert (tmp_path / "resumed.partial" / "_work" / "checkpoints" / "checkpoint-2").is_dir()
    monkeypatch.setattr(trl_bridge, "trainer_callback", real)
    resumed = execute(STAGE, items, sets=sets, out=tmp_path / "resumed")
    assert metrics(resumed)["resumed_from"].endswith("checkpoint-2")
    a, b = load_file(clean / "model.safetensors"), load_file(resumed / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_qlora_on_cpu_is_bad_input_and_writes_nothing(tmp_path, tiny_model, chats):
    with pytest.raises(BadInput, match="qlora needs a CUDA GPU"):
        execute(
            STAGE,
            [f"model={tiny_model}", str(chats["math"])],
            sets=QUICK + ["lora.mode=qlora"],
            out=tmp_path / "q",
        )
    assert not (tmp_path / "q").exists() and not (tmp_path / "q.partial").exists()


@pytest.mark.parametrize(
    "sets, items, message",
    [
        (["mix.other=[1.0]"], ["math"], "unknown sources"),
        (["mix.math=[-1.0]"], ["math"], "mix.math"),
        ([], [], "at least one chat data input"),
    ],
)
def test_bad_mix_or_missing_data_is_bad_input(tmp_path, tiny_model, chats, sets, items, message):
    inputs = [f"model={tiny_model}"] + [f"{n}={chats[n]}" for n in items]
    with pytest.raises(BadInput, match=message):
        execute(STAGE, inputs, sets=QUICK + sets, out=tmp_path / "bad")
