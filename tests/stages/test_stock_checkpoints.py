"""midtrain and context-extend on tiny random checkpoints shaped like the real ones users
continue, saved with `save_pretrained`: Qwen3 with its own head_dim (tied and untied),
Llama 3.2 with llama3 RoPE scaling, SmolLM3 with NoPE layers, and Qwen3 with a YaRN
rope_scaling of its own.

Each run: the import matches transformers' class (fp32, ~1e-5), a few steps train, the
export is the same class with the same config.json, and its logits equal llmforge's model.
"""

import json

import pytest
import torch
import transformers

from llmforge.errors import ConfigError
from llmforge.model.hf import load_gpt
from llmforge.stage import execute
from stages import context_extend, midtrain, tokenize
from tests import byo_models
from tests.conftest import write_jsonl
from tests.stages.pretrain_helpers import TINY_SETS

LLAMA3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}  # fmt: skip
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0,
        "original_max_position_embeddings": 64}  # fmt: skip
VARIANTS = {  # family, config fields beyond the shared tiny shape
    "qwen3-head-dim-tied": ("Qwen3", dict(head_dim=16, tie_word_embeddings=True)),
    "qwen3-head-dim-untied": ("Qwen3", dict(head_dim=16, tie_word_embeddings=False)),
    "llama-3.2-llama3-rope": ("Llama", dict(tie_word_embeddings=True, rope_parameters=LLAMA3)),
    "smollm3-nope": ("SmolLM3", dict(no_rope_layers=[1, 1, 1, 0],
                                     rope_parameters={"rope_type": "default", "rope_theta": 5e5})),
    "qwen3-yarn": ("Qwen3", dict(head_dim=8, rope_parameters=YARN)),
}  # fmt: skip
TRAIN = [s for s in TINY_SETS if not s.startswith(("model.", "train.seq_len"))]
EXACT = 1e-5  # fp32 logits of size ~1; measured 0 (bit-identical) on these


def save_variant(name: str, out, tok):
    family, extra = VARIANTS[name]
    config = getattr(transformers, f"{family}Config")(
        vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    model = getattr(transformers, f"{family}ForCausalLM")(config)
    with torch.no_grad():  # perturb the norms too, so a mis-mapped tensor shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def stock(tmp_path_factory):
    """Every variant, and one tokens artifact (they share the tokenizer)."""
    root = tmp_path_factory.mktemp("stock")
    tok = byo_models.tokenizer("qwen3")
    models = {name: save_variant(name, root / name, tok) for name in VARIANTS}
    docs = write_jsonl(root / "docs.jsonl", [{"id": f"d{i}", "text": t}
                                             for i, t in enumerate(byo_models.corpus(200))])  # fmt: skip
    tokens = execute(tokenize.STAGE, [f"math={docs}", f"tokenizer={models['smollm3-nope']}"],
                     sets=["val_fraction=0.1"], out=root / "tokens")  # fmt: skip
    return models, tokens


def check_exported(out, source) -> None:
    """Same class, same config.json; transformers' logits of the export are llmforge's."""
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert type(reloaded).__name__ == json.loads((source / "config.json").read_text())[
        "architectures"][0]  # fmt: skip
    x = torch.randint(
        0, reloaded.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        diff = (reloaded(x, use_cache=False).logits - load_gpt(out).eval()(x).logits).abs().max()
    assert diff <= EXACT
    before = transformers.AutoModelForCausalLM.from_pretrained(str(source)).state_dict()
    after = reloaded.state_dict()
    assert before.keys() == after.keys() and any(
        not torch.equal(before[k], after[k]) for k in before
    )


@pytest.mark.parametrize("name", list(VARIANTS))
def test_midtrain_continues_the_stock_checkpoint_exactly(stock, name, tmp_path):
    models, tokens = stock
    source = models[name]
    out = execute(midtrain.STAGE, [str(source), f"tokens={tokens}"],
                  sets=[*TRAIN, "train.seq_len=64", "train.steps=3"], out=tmp_path / "mid")  # fmt: skip
    assert json.loads((out / "manifest.json").read_text())["metrics"][
        "import_parity_max_diff"] <= EXACT  # fmt: skip
    exported = json.loads((out / "config.json").read_text())
    assert exported == json.loads((source / "config.json").read_text())
    check_exported(out, source)


@pytest.mark.parametrize("name", ["llama-3.2-llama3-rope", "qwen3-yarn"])
def test_context_extend_keeps_the_source_rope_scaling_under_abf(stock, name, tmp_path):
    """The source's scaling stays (factor, original length); ABF replaces the base under it."""
    models, tokens = stock
    source = models[name]
    sets = [*TRAIN, "train.steps=2", "extend.lengths=[192]", "extend.rope_theta=[40000]"]
    out = execute(context_extend.STAGE, [str(source), f"tokens={tokens}"], sets=sets,
                  out=tmp_path / "long")  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    want = LLAMA3 if name.startswith("llama") else YARN
    assert config["rope_parameters"] == {**want, "rope_theta": 40000.0}
    assert config["max_position_embeddings"] == 192
    check_exported(out, source)


def test_context_extend_refuses_yarn_over_the_source_scaling(stock, tmp_path):
    models, tokens = stock
    sets = [*TRAIN, "train.steps=1", "extend.lengths=[192]", "extend.rope_theta=[0]",
            "extend.yarn_factor=2"]  # fmt: skip
    for name in ("llama-3.2-llama3-rope", "qwen3-yarn"):
        with pytest.raises(ConfigError, match="extend.yarn_factor.*already scales RoPE") as err:
            execute(context_extend.STAGE, [str(models[name]), f"tokens={tokens}"], sets=sets,
                    out=tmp_path / name)  # fmt: skip
        assert err.value.exit_code == 2
        assert not (tmp_path / name).exists() and not (tmp_path / f"{name}.partial").exists()
