"""The midtrain stage: continues a stock-Llama model artifact on a new mixture."""

import torch
from typer.testing import CliRunner

from llmforge import artifact
from llmforge.model.hf import load_gpt
from stages.app import app
from tests.stages.pretrain_helpers import TINY_SETS

runner = CliRunner()
TRAIN_SETS = [s for s in TINY_SETS if not s.startswith("model.")]


def test_midtrain_continues_a_model_on_a_new_mixture(tiny_model, tiny_tokens, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "mid"
    sets = [*TRAIN_SETS, "train.steps=8", "data.stages=[{weights: {math: 0.9, code: 0.1}}]"]
    args = ["midtrain", str(tiny_model), f"tokens={tiny_tokens}", "-o", str(out), "-q"]
    result = runner.invoke(app, [*args, *[x for s in sets for x in ("-s", s)]])
    assert result.exit_code == 0, result.output
    m = artifact.read_manifest(out)
    assert [i["role"] for i in m["inputs"]] == ["model", "tokens"]
    assert m["metrics"]["domain_shares"]["math"] > 0.75
    before, after = load_gpt(tiny_model), load_gpt(out)
    assert before.cfg == after.cfg
    assert not torch.equal(before.layers[0].mlp.up_proj.weight, after.layers[0].mlp.up_proj.weight)
    hf = AutoModelForCausalLM.from_pretrained(str(out))
    assert hf(torch.tensor([[1, 2, 3]])).logits.shape[-1] == before.cfg.vocab_size


def test_midtrain_rejects_a_tokens_artifact_as_model(tiny_tokens, tmp_path):
    args = ["midtrain", str(tiny_tokens), f"tokens={tiny_tokens}", "-o", str(tmp_path / "x"), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "expected model" in result.output
