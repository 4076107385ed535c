"""The sft stage with a teacher= input distils on-policy: the student's held-out reverse KL
to a (peaked, random) teacher falls, the model publishes, a resumed run continues, and a
teacher with another vocabulary is refused before any work."""

import json
import random

import pytest

from llmforge.errors import BadInput
from llmforge.stage import execute
from stages.sft import STAGE
from tests.conftest import write_jsonl

SETS = [
    "style.enabled=false",
    "eval.format_prompts=0",
    "sft.heldout_fraction=0.2",
    "train.batch_size=8",
    "train.max_steps=40",
    "train.lr=0.01",
    "train.warmup_ratio=0",
    "train.scheduler=constant",
    "train.logging_steps=5",
    "train.save_steps=20",
    "distill.max_new_tokens=16",
    "distill.heldout_prompts=16",
    "distill.think=false",
]


@pytest.fixture(scope="module")
def chats(tmp_path_factory):
    from llmforge.data.synth import chat, splits

    rng = random.Random(0)
    rows = chat.sft_rows(splits.sample(rng, "train", 80, 1), rng)
    return write_jsonl(tmp_path_factory.mktemp("chats") / "math.jsonl", rows)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_tokenizer_dir):
    from tests.fixtures_model import publish_random_llama

    out = tmp_path_factory.mktemp("teacher") / "teacher"
    return publish_random_llama(out, tiny_tokenizer_dir, seed=1, logit_scale=8.0)


def test_distillation_lowers_heldout_reverse_kl(tiny_model, teacher, chats, tmp_path):
    args = [f"model={tiny_model}", f"teacher={teacher}", f"math={chats}"]
    out = execute(STAGE, args, sets=SETS, out=tmp_path / "d")
    manifest = json.loads((out / "manifest.json").read_text())
    m = manifest["metrics"]
    before, after = m["heldout_reverse_kl_before"], m["heldout_reverse_kl_after"]
    assert m["mode"] == "distill" and m["steps"] == 40
    assert before["prompts"] == after["prompts"] == 16
    assert after["reverse_kl"] < 0.5 * before["reverse_kl"]
    assert [i["role"] for i in manifest["inputs"]] == ["model", "teacher", "math"]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in logged if "loss" in r]
    assert losses[-1] < losses[0]  # TRL's reverse-KL loss falls on the training prompts
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_teacher_with_another_vocabulary_is_refused(
    tiny_model, tiny_tokenizer_dir, chats, tmp_path
):
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmforge.data.tokenizer import copy_tokenizer_files

    cfg = LlamaConfig(vocab_size=1000, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=32)  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(str(tmp_path / "big"))  # a plain checkpoint dir
    copy_tokenizer_files(tiny_tokenizer_dir, tmp_path / "big")
    args = [f"model={tiny_model}", f"teacher={tmp_path / 'big'}", f"math={chats}"]
    with pytest.raises(BadInput, match="teacher's vocabulary"):
        execute(STAGE, args, sets=SETS, out=tmp_path / "o")
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_a_crashed_distillation_resumes(tiny_model, teacher, chats, tmp_path, monkeypatch):
    from transformers import TrainerCallback

    from llmforge.errors import RunFailed
    from llmforge.post import trl_bridge

    real = trl_bridge.trainer_callback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise RuntimeError("simulated crash")

    sets = [s for s in SETS if not s.startswith(("train.max_steps", "train.save_steps"))]
    sets += ["train.max_steps=8", "train.save_steps=4"]
    args = [f"model={tiny_model}", f"teacher={teacher}", f"math={chats}"]
    monkeypatch.setattr(trl_bridge, "trainer_callback", lambda *a: Crash())
    with pytest.raises(RunFailed, match="simulated crash"):
        execute(STAGE, args, sets=sets, out=tmp_path / "r")
    assert (tmp_path / "r.partial" / "_work" / "checkpoints" / "checkpoint-4").is_dir()
    monkeypatch.setattr(trl_bridge, "trainer_callback", real)
    out = execute(STAGE, args, sets=sets, out=tmp_path / "r")
    m = json.loads((out / "manifest.json").read_text())["metrics"]
    assert m["steps"] == 8 and m["resumed_from"].endswith("checkpoint-4")
