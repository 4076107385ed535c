"""Bring your own model: sft, dpo, rlvr and eval on plain `save_pretrained` checkpoints of
four stock architectures (no manifest), midtrain on the Llama and Qwen3 ones.

Each output must load with `AutoModelForCausalLM` as the class that went in, keep the
model's own chat template and special tokens (or, with none, get llmforge's), and record
the checkpoint in its lineage as an outside input with its content hash.
"""

import json
import random

import pytest
import torch

from llmforge import artifact
from llmforge.stage import execute
from stages import context_extend, dpo, eval, midtrain, rlvr, sft, tokenize
from tests import byo_models
from tests.conftest import write_jsonl
from tests.stages.pretrain_helpers import TINY_SETS

ARCHS = list(byo_models.ARCHITECTURES)
SFT = ["style.enabled=false", "eval.format_prompts=0", "sft.heldout_fraction=0",
       "train.batch_size=4", "train.max_steps=2", "train.max_length=96", "train.save_steps=100",
       "train.lr=0.001", "train.logging_steps=1"]  # fmt: skip
DPO = ["train.batch_size=4", "train.max_steps=2", "train.max_length=96", "train.save_steps=100",
       "train.lr=0.001", "dpo.heldout_fraction=0.25"]  # fmt: skip
RL = ["steps=2", "rollout.group_size=2", "rollout.prompts_per_step=2", "rollout.max_new_tokens=6",
      "loss.mask_unparseable=false", "loss.mask_truncated=false", "threads=1"]  # fmt: skip
EVAL = ["sampling.n=1", "sampling.max_new_tokens=6", "report=false"]


@pytest.fixture(scope="module")
def byo(tmp_path_factory):
    """The four checkpoints and data in the formats users keep it in."""
    root = tmp_path_factory.mktemp("byo")
    rng = random.Random(0)
    sums = [(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(16)]
    messages = [
        {"id": f"m{i}", "mode": ["think", "no_think"][i % 2], "messages": [
            {"role": "user", "content": f"What is {a} + {b}?"},
            {"role": "assistant", "content": f"The answer is \\boxed{{{a + b}}}.",
             "reasoning": f"we add {a} and {b}"}]}
        for i, (a, b) in enumerate(sums)
    ]  # fmt: skip
    sharegpt = [
        {"conversations": [{"from": "human", "value": f"What is {a} + {b}?"},
                           {"from": "gpt", "value": f"The answer is {a + b}."}]}
        for a, b in sums
    ]  # fmt: skip
    completions = [{"prompt": f"{a} + {b} =", "completion": f" {a + b}"} for a, b in sums]
    implicit = [
        {"chosen": [{"role": "user", "content": f"What is {a} + 1?"},
                    {"role": "assistant", "content": f"\\boxed{{{a + 1}}}"}],
         "rejected": [{"role": "user", "content": f"What is {a} + 1?"},
                      {"role": "assistant", "content": f"{a}"}]}
        for a, _ in sums[:8]
    ]  # fmt: skip
    strings = [{"prompt": f"What is {a} + 1?", "chosen": f"\\boxed{{{a + 1}}}", "rejected": f"{a}"}
               for a, _ in sums[:8]]  # fmt: skip
    tasks = [{"id": f"t{i}", "prompt": f"What is {i} + {i}?", "reference": str(2 * i),
              "verifier": "math", "chat": True} for i in range(4)]  # fmt: skip
    files = {name: write_jsonl(root / f"{name}.jsonl", rows) for name, rows in [
        ("messages", messages), ("sharegpt", sharegpt), ("completions", completions),
        ("implicit", implicit), ("strings", strings)]}  # fmt: skip
    return {
        "models": {name: byo_models.save_model(name, root / name) for name in ARCHS},
        "chat": {"qwen3": files["messages"], "llama": files["sharegpt"],
                 "mistral": files["sharegpt"], "gpt2": files["completions"]},
        "prefs": {"qwen3": files["implicit"], "llama": files["strings"],
                  "mistral": files["implicit"], "gpt2": files["strings"]},
        "tasks": write_jsonl(root / "tasks.jsonl", tasks),
        "docs": write_jsonl(root / "docs.jsonl", [{"id": f"d{i}", "text": t}
                                                   for i, t in enumerate(byo_models.corpus(120))]),
    }  # fmt: skip


def check_published(out, source, name: str) -> dict:
    """The output is the same architecture with the same tokenizer; lineage names the input."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert type(model).__name__ == byo_models.ARCHITECTURES[name]
    assert model.config.architectures == [byo_models.ARCHITECTURES[name]]
    before, after = (
        AutoTokenizer.from_pretrained(str(source)),
        AutoTokenizer.from_pretrained(str(out)),
    )
    if before.chat_template:  # the model's own template and special tokens, unchanged
        assert after.chat_template == before.chat_template
        assert after.get_vocab() == before.get_vocab()
        assert (after.eos_token, after.bos_token) == (before.eos_token, before.bos_token)
    else:  # none: llmforge's think/no_think template, and the ChatML tokens it needs
        assert "enable_thinking" in after.chat_template
        assert {"<|im_start|>", "<|im_end|>", "<think>"} <= set(after.get_vocab())
        assert model.get_input_embeddings().num_embeddings >= len(after)
    manifest = artifact.read_manifest(out)
    (entry,) = [i for i in manifest["inputs"] if i["role"] == "model"]
    assert entry["kind"] == "model" and entry["path"] == str(source.resolve())
    assert entry["id"] == "ext-" + entry["outside"]["sha256"][:20]
    assert byo_models.ARCHITECTURES[name] in entry["outside"]["detected"]
    (node,) = [n for n in artifact.lineage(out)["inputs"] if n["role"] == "model"]
    assert node["outside"] == entry["outside"] and "error" not in node
    return manifest["metrics"]


@pytest.mark.parametrize("name", ARCHS)
def test_sft_on_a_plain_checkpoint(byo, name, tmp_path):
    source = byo["models"][name]
    out = execute(sft.STAGE, [f"model={source}", f"chat={byo['chat'][name]}"], sets=SFT,
                  out=tmp_path / "sft")  # fmt: skip
    metrics = check_published(out, source, name)
    assert metrics["architecture"] == byo_models.ARCHITECTURES[name]
    assert metrics["chat_template"] == ("added think/no_think" if name == "gpt2" else "own")
    assert metrics["steps"] == 2 and metrics["tokens"] > 0 and metrics["train_loss"] > 0


@pytest.mark.parametrize("name", ARCHS)
def test_dpo_on_a_plain_checkpoint(byo, name, tmp_path):
    source = byo["models"][name]
    out = execute(dpo.STAGE, [f"model={source}", f"data={byo['prefs'][name]}"], sets=DPO,
                  out=tmp_path / "dpo")  # fmt: skip
    metrics = check_published(out, source, name)
    assert metrics["steps"] == 2 and metrics["pairs"] == 8
    assert metrics["heldout_before"]["pairs"] == 2  # chosen/rejected scored under the template


@pytest.mark.parametrize("name", ARCHS)
def test_rlvr_on_a_plain_checkpoint(byo, name, tmp_path):
    source = byo["models"][name]
    out = execute(rlvr.STAGE, [str(source), f"prompts={byo['tasks']}"], sets=RL,
                  out=tmp_path / "rl")  # fmt: skip
    metrics = check_published(out, source, name)
    assert metrics["steps_run"] == 2 and metrics["tokens"] > 0


@pytest.mark.parametrize("name", ARCHS)
def test_eval_on_a_plain_checkpoint(byo, name, tmp_path):
    source = byo["models"][name]
    out = execute(eval.STAGE, [str(source), f"task={byo['tasks']}"], sets=EVAL,
                  out=tmp_path / "eval")  # fmt: skip
    ((label, entry),) = json.loads((out / "results.json").read_text())["models"].items()
    assert entry["tasks"]["tasks"]["all"]["problems"] == 4
    samples = (out / "samples" / label / "tasks.jsonl").read_text().splitlines()
    assert len(samples) == 4 and all("completion" in json.loads(s) for s in samples)
    (inp,) = artifact.read_manifest(out)["inputs"][:1]
    assert inp["outside"]["detected"].endswith(f"({byo_models.ARCHITECTURES[name]})")


def test_eval_report_compares_a_plain_checkpoint_with_what_was_made_from_it(byo, tmp_path):
    source = byo["models"]["llama"]
    tuned = execute(sft.STAGE, [f"model={source}", f"chat={byo['chat']['llama']}"], sets=SFT,
                    out=tmp_path / "sft")  # fmt: skip
    items = [str(source), str(tuned), f"compare={byo['models']['qwen3']}", f"task={byo['tasks']}"]
    out = execute(eval.STAGE, items, sets=EVAL[:-1], out=tmp_path / "eval")
    summary = (out / "report" / "summary.md").read_text()
    assert "| llama |  |" in summary and "| sft | sft |" in summary and "| qwen3 |  |" in summary
    ids = {e["id"] for e in json.loads((out / "results.json").read_text())["models"].values()}
    assert artifact.open_input(source, ("model",)).id in ids  # the checkpoint's content id


@pytest.mark.parametrize("name", ["llama", "qwen3"])
def test_midtrain_continues_a_plain_checkpoint_as_its_own_architecture(byo, name, tmp_path):
    from transformers import AutoModelForCausalLM

    source = byo["models"][name]
    tokens = execute(tokenize.STAGE, [f"math={byo['docs']}", f"tokenizer={source}"],
                     sets=["val_fraction=0.1"], out=tmp_path / "tokens")  # fmt: skip
    meta = json.loads((tokens / "tokens.json").read_text())
    assert meta["vocab_size"] == len(byo_models.tokenizer(name))  # no ids past the embeddings
    sets = [s for s in TINY_SETS if not s.startswith("model.")] + ["train.steps=3"]
    out = execute(
        midtrain.STAGE, [str(source), f"tokens={tokens}"], sets=sets, out=tmp_path / "mid"
    )
    metrics = check_published(out, source, name)
    assert metrics["import_parity_max_diff"] <= 1e-4
    before = AutoModelForCausalLM.from_pretrained(str(source)).state_dict()
    after = AutoModelForCausalLM.from_pretrained(str(out)).state_dict()
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained


def test_context_extend_continues_a_plain_qwen3(byo, tmp_path):
    from transformers import AutoConfig

    source = byo["models"]["qwen3"]
    tokens = execute(tokenize.STAGE, [f"math={byo['docs']}", f"tokenizer={source}"],
                     sets=["val_fraction=0.1"], out=tmp_path / "tokens")  # fmt: skip
    sets = [s for s in TINY_SETS if not s.startswith(("model.", "train.seq_len"))]
    sets += ["train.steps=2", "extend.lengths=[320]", "extend.rope_theta=[40000]"]
    out = execute(context_extend.STAGE, [str(source), f"tokens={tokens}"], sets=sets,
                  out=tmp_path / "long")  # fmt: skip
    metrics = check_published(out, source, "qwen3")
    assert metrics["original_max_seq_len"] == 256 and metrics["import_parity_max_diff"] <= 1e-4
    config = AutoConfig.from_pretrained(str(out))
    assert config.max_position_embeddings == 320 and config.rope_parameters["rope_theta"] == 40000


def test_midtrain_names_the_architectures_it_continues(byo, tmp_path, tiny_tokens):
    from llmforge.errors import BadInput

    with pytest.raises(BadInput, match="continue llama, qwen3 and smollm3") as err:
        execute(midtrain.STAGE, [str(byo["models"]["mistral"]), f"tokens={tiny_tokens}"],
                sets=["train.steps=1"], out=tmp_path / "mid")  # fmt: skip
    assert "mistral" in str(err.value)
    assert not (tmp_path / "mid").exists() and not (tmp_path / "mid.partial").exists()
