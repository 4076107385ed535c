"""Continuing a stock checkpoint: the import is checked against transformers' own class
before training, and export gives back the family, dtype, sampling defaults and licence
files it came with, never stale weight shards."""

import json

import pytest
import torch
import transformers

from llmforge.errors import BadInput
from llmforge.model import hf_stock
from llmforge.model.hf import export_hf, load_gpt
from llmforge.model.hf_stock import check_import_parity, stock_export_args
from tests import byo_models


def save_stock(family: str, out, dtype=torch.float32, **extra):
    config_name, model_name = {
        "llama": ("LlamaConfig", "LlamaForCausalLM"),
        "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
        "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM"),
    }[family]
    tok = byo_models.tokenizer("qwen3")
    config = getattr(transformers, config_name)(
        vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=None, eos_token_id=None, pad_token_id=None, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.to(dtype).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.mark.parametrize("family", ["llama", "qwen3", "smollm3"])
def test_parity_of_an_exact_import_is_tiny(family, tmp_path):
    path = save_stock(family, tmp_path / family, **({"head_dim": 8} if family == "qwen3" else {}))
    assert check_import_parity(path, load_gpt(path)) < 1e-4


def test_an_inexact_import_fails_loudly_before_training(tmp_path, monkeypatch):
    path = save_stock("llama", tmp_path / "llama", rope_parameters={"rope_type": "default",
                                                                    "rope_theta": 500.0})  # fmt: skip
    real = hf_stock.config_from_hf
    monkeypatch.setattr(hf_stock, "config_from_hf",  # an import that drops the RoPE base
                        lambda cfg, where=None: real({**cfg, "rope_parameters": None}, where))  # fmt: skip
    with pytest.raises(BadInput, match="not exact.*LlamaForCausalLM by up to"):
        check_import_parity(path, load_gpt(path))


def test_export_keeps_family_dtype_and_the_source_files_it_should(tmp_path):
    path = save_stock("smollm3", tmp_path / "src", dtype=torch.bfloat16, no_rope_layers=[1, 1])
    gen = json.loads((path / "generation_config.json").read_text())
    (path / "generation_config.json").write_text(json.dumps({**gen, "temperature": 0.6}))
    (path / "LICENSE").write_text("apache-2.0")
    (path / "model-00001-of-00002.safetensors").write_bytes(b"stale")  # must not travel
    model = load_gpt(path)
    assert model.cfg.nope_every == 0  # by its features alone this is a Llama
    args = stock_export_args(path)
    assert (args["family"], args["dtype"]) == ("smollm3", torch.bfloat16)
    export_hf(model, tmp_path / "out", path, **args)
    out = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    assert type(out).__name__ == "SmolLM3ForCausalLM" and out.dtype == torch.bfloat16
    assert (
        json.loads((tmp_path / "out" / "generation_config.json").read_text())["temperature"] == 0.6
    )
    assert (tmp_path / "out" / "LICENSE").is_file()
    assert not (tmp_path / "out" / "model-00001-of-00002.safetensors").exists()
    with pytest.raises(ValueError, match="exports as llama, not qwen3"):
        export_hf(model, tmp_path / "bad", family="qwen3")
