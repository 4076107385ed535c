"""Stock Llama, Qwen3 and SmolLM3 checkpoints as llmforge models: config.json to our
`ModelConfig` and back, and the logit-parity check that proves an import exact.

config.json is read through transformers' own config class, so defaults, legacy keys
(`rope_scaling` + `rope_theta`) and derived fields (SmolLM3's `no_rope_layers` from its
interval, Qwen3's `head_dim` of 128 when the file has none) mean what they mean to the
model class that trained the checkpoint. What the mapping carries:

| config.json                                  | ModelConfig                              |
| -------------------------------------------- | ---------------------------------------- |
| `head_dim` (Qwen3-0.6B/4B/8B: 128)            | `head_dim` (0 when it is hidden / heads) |
| `rope_parameters` default, yarn, llama3      | `rope_theta`, `rope_scaling`             |
| `tie_word_embeddings` (the class's default)  | `tie_embeddings`                         |
| Qwen3's q/k RMSNorm                          | `qk_norm`                                |
| SmolLM3 `no_rope_layers`, every Nth layer    | `nope_every`                             |

Anything else that changes the logits (biases, other activations, sliding windows, partial
rotary, other RoPE types) is refused with the key that asked for it. Export writes a
continued checkpoint's own config.json back with only the fields above replaced
(`continued_config`), so everything llmforge does not model travels unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    PreTrainedConfig,
    Qwen3Config,
    SmolLM3Config,
)

from llmforge.causal_lm import read_json_object
from llmforge.errors import BadInput
from llmforge.model.gpt import GPT, ModelConfig, RopeScaling

CONFIGS = {"llama": LlamaConfig, "qwen3": Qwen3Config, "smollm3": SmolLM3Config}
ROPE_TYPES = ("default", "yarn", "llama3")
_REQUIRED_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
)  # fmt: skip
# The part of a stock config that ModelConfig owns; export replaces exactly these.
_ARCHITECTURE_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps",
    "rope_parameters", "tie_word_embeddings", "no_rope_layers",
)  # fmt: skip


# ---------------------------------------------------------------- config.json -> ModelConfig


def config_from_hf(hf: dict, where: Path | None = None) -> ModelConfig:
    """Map a stock Llama/Qwen3/SmolLM3 config.json onto ModelConfig, refusing what we lack."""
    family = hf.get("model_type")
    where_s = str(where) if where else None
    if family not in CONFIGS:
        raise BadInput(
            f"model_type {family!r}: midtrain and context-extend continue llama, qwen3 and "
            "smollm3 checkpoints (and llmforge's own); sft, dpo, rlvr and eval take any "
            "causal LM",
            path=where_s,
        )
    missing = [k for k in _REQUIRED_KEYS if k not in hf]
    if missing:
        raise BadInput(f"config.json lacks {missing}", path=where_s)
    c = _read_config(family, hf, where_s)
    _refuse_unsupported(c, where_s)
    heads, rope = c.num_attention_heads, _rope_of(c, where_s)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return ModelConfig(
        vocab_size=c.vocab_size, d_model=c.hidden_size, n_layers=c.num_hidden_layers,
        n_heads=heads, n_kv_heads=c.num_key_value_heads or heads,
        head_dim=0 if head_dim * heads == c.hidden_size else head_dim,
        ffn_hidden=c.intermediate_size, max_seq_len=c.max_position_embeddings,
        rope_theta=float(rope["rope_theta"]),
        rope_scaling=_rope_scaling(rope, c.max_position_embeddings, where_s),
        nope_every=_nope_every(c.no_rope_layers, c.num_hidden_layers, where_s)
        if family == "smollm3" else 0,
        qk_norm=family == "qwen3", tie_embeddings=bool(c.tie_word_embeddings),
        norm_eps=c.rms_norm_eps, init_std=c.initializer_range,
    )  # fmt: skip


def _read_config(family: str, hf: dict, where: str | None) -> PreTrainedConfig:
    """config.json as transformers' own class reads it (its defaults, its legacy keys)."""
    try:
        return CONFIGS[family].from_dict(hf)
    except (ValueError, TypeError, KeyError) as e:
        raise BadInput(f"config.json does not load as {family}: {e}", path=where) from None


def _rope_of(c: PreTrainedConfig, where: str | None) -> dict:
    params = c.rope_parameters
    if not isinstance(params, dict) or "rope_theta" not in params:
        raise BadInput("config.json: per-layer rope_parameters are not supported", path=where)
    return params


def _refuse_unsupported(c: PreTrainedConfig, where: str | None) -> None:
    """Features of these classes that llmforge's model does not have, by config key."""
    rope = _rope_of(c, where)
    layer_types = getattr(c, "layer_types", None) or []
    checks = {
        "attention_bias": not getattr(c, "attention_bias", False),
        "mlp_bias": not getattr(c, "mlp_bias", False),
        "hidden_act": c.hidden_act == "silu",
        "use_sliding_window": not getattr(c, "use_sliding_window", False),
        "layer_types": all(t == "full_attention" for t in layer_types),
        "partial_rotary_factor": rope.get("partial_rotary_factor", 1.0) == 1.0,
    }
    for key, ok in checks.items():
        if not ok:
            value = rope.get(key) if key == "partial_rotary_factor" else getattr(c, key, None)
            raise BadInput(f"config.json: '{key}' = {value!r} is not supported", path=where)


def _rope_scaling(params: dict, max_positions: int, where: str | None) -> RopeScaling:
    """rope_parameters -> RopeScaling; rope types other than default/yarn/llama3 and YaRN
    variants we do not compute (explicit attention factor, mscale, untruncated) are refused."""
    kind = params.get("rope_type", "default")
    if kind == "default":
        return RopeScaling()
    if kind not in ROPE_TYPES:
        raise BadInput(
            f"config.json: rope_type {kind!r} is not supported; llmforge continues checkpoints "
            f"with rope_type {', '.join(ROPE_TYPES)}",
            path=where,
        )
    for key in ("attention_factor", "mscale", "mscale_all_dim"):
        if params.get(key) is not None:
            raise BadInput(f"config.json: rope_parameters '{key}' is not supported", path=where)
    if params.get("truncate", True) is not True:
        raise BadInput("config.json: rope_parameters 'truncate' = false is not supported",
                       path=where)  # fmt: skip
    original = params.get("original_max_position_embeddings")
    if not original:
        raise BadInput(f"config.json: {kind} rope_parameters lack "
                       "'original_max_position_embeddings'", path=where)  # fmt: skip
    if kind == "llama3":
        return RopeScaling(
            type="llama3", factor=params["factor"], original_max_seq_len=original,
            low_freq_factor=params["low_freq_factor"], high_freq_factor=params["high_freq_factor"],
        )  # fmt: skip
    return RopeScaling(
        type="yarn", factor=params.get("factor") or max_positions / original,
        original_max_seq_len=original, beta_fast=params.get("beta_fast") or 32.0,
        beta_slow=params.get("beta_slow") or 1.0,
    )  # fmt: skip


def _nope_every(flags: list[int] | None, n: int, where: str | None) -> int:
    """SmolLM3's per-layer flags (1 = RoPE) as a period; irregular patterns are refused."""
    flags = list(flags or [1] * n)[:n]
    if all(flags):
        return 0
    period = flags.index(0) + 1
    if flags != [int((i + 1) % period != 0) for i in range(n)]:
        raise BadInput(f"config.json: no_rope_layers {flags} is not every Nth layer", path=where)
    return period


# ---------------------------------------------------------------- ModelConfig -> config.json


def rope_parameters(cfg: ModelConfig) -> dict:
    """transformers 5 `rope_parameters` (it replaced `rope_scaling`): theta plus the scaling."""
    params = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    s = cfg.rope_scaling
    if s.type == "yarn":
        params.update(rope_type="yarn", factor=s.factor,
                      original_max_position_embeddings=s.original_max_seq_len)  # fmt: skip
        for key, default in (("beta_fast", 32.0), ("beta_slow", 1.0)):
            if getattr(s, key) != default:  # left out at the default, as published configs do
                params[key] = getattr(s, key)
    elif s.type == "llama3":
        params.update(
            rope_type="llama3", factor=s.factor, original_max_position_embeddings=s.original_max_seq_len,
            low_freq_factor=s.low_freq_factor, high_freq_factor=s.high_freq_factor,
        )  # fmt: skip
    return params


def architecture_fields(cfg: ModelConfig, family: str) -> dict:
    """The config.json fields of a stock `family` that `cfg` decides."""
    fields = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_hidden,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_size,
        max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
        rope_parameters=rope_parameters(cfg), tie_word_embeddings=cfg.tie_embeddings,
    )  # fmt: skip
    if family == "smollm3":
        fields["no_rope_layers"] = [int(cfg.uses_rope(i)) for i in range(cfg.n_layers)]
        if not cfg.head_dim:  # SmolLM3Config has no head_dim of its own: hidden / heads
            del fields["head_dim"]
    return fields


def continued_config(base: dict, cfg: ModelConfig, family: str) -> PreTrainedConfig:
    """A continued checkpoint's config.json with the architecture fields `cfg` owns replaced,
    everything else (token ids, dropout, layer types, ...) as it was."""
    if base.get("model_type") != family:
        raise ValueError(f"the base config is {base.get('model_type')!r}, not {family}")
    merged = {k: v for k, v in base.items() if k not in ("rope_scaling", "rope_theta")}
    merged.update(architecture_fields(cfg, family))
    if "layer_types" in merged:  # one entry per layer; the family validates the length
        merged["layer_types"] = ["full_attention"] * cfg.n_layers
    return CONFIGS[family].from_dict(merged)


def stock_export_args(model_dir: str | Path) -> dict:
    """`export_hf` arguments that give a continued checkpoint back its own family, dtype and
    config.json (Qwen3 in, Qwen3 out; a bf16 checkpoint stays bf16); empty for our custom
    family."""
    hf_file = Path(model_dir) / "config.json"
    hf = read_json_object(hf_file) if hf_file.is_file() else {}
    if hf.get("model_type") not in CONFIGS:
        return {}
    dtype = getattr(torch, str(hf.get("dtype") or hf.get("torch_dtype") or "float32"), None)
    return {"family": hf["model_type"], "base_config": hf,
            "dtype": dtype if isinstance(dtype, torch.dtype) else None}  # fmt: skip


# ---------------------------------------------------------------- the parity check


def check_import_parity(model_dir: str | Path, model: GPT, tokens: int = 32) -> float:
    """Max |logit difference| between the imported GPT and transformers' own class on the
    same checkpoint (both fp32, a fixed random batch); BadInput when the import is not exact.

    Costs one more fp32 copy of the model in CPU memory for a moment. Skipped (0.0) for our
    custom family, whose transformers class runs this very GPT.
    """
    path = Path(model_dir)
    hf = read_json_object(path / "config.json") if (path / "config.json").is_file() else {}
    if hf.get("model_type") in (None, "llmforge"):
        return 0.0
    reference = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    n = min(tokens, model.cfg.max_seq_len)
    ids = torch.randint(model.cfg.vocab_size, (2, n), generator=torch.Generator().manual_seed(0))
    was_training = model.training
    with torch.no_grad():
        want = reference(input_ids=ids, use_cache=False).logits.float()
        got = model.eval()(ids).logits.float()
    model.train(was_training)
    diff = float((got - want).abs().max())
    tol = 1e-3 * max(1.0, float(want.abs().max()))
    if not diff <= tol:  # also catches NaN
        raise BadInput(
            f"the import into llmforge's model is not exact: its logits differ from "
            f"transformers' {type(reference).__name__} by up to {diff:.3g} (tolerance "
            f"{tol:.3g}); config.json uses a feature the import does not map",
            path=str(path),
        )
    return diff
