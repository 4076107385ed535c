"""Export our GPT to a transformers directory, and load a GPT back from one.

Export picks the most widely supported family the model's features allow, so TRL, vLLM and
lm-eval take the result as it is (see `hf_architecture` and docs/model.md):

| features                                              | family                      |
| ----------------------------------------------------- | --------------------------- |
| GQA, SwiGLU, RMSNorm, RoPE (+ABF, YaRN, llama3), any  | Llama                       |
| head_dim, tied or untied head                         |                             |
| + QK-norm                                             | Qwen3                       |
| + NoPE every Nth layer                                | SmolLM3                     |
| gated attention, soft-capping, embedding scale, MoE,  | `LLMForgeForCausalLM`       |
| or QK-norm together with NoPE                         | (registered custom class)   |

Importing this module registers `LLMForgeConfig` / `LLMForgeForCausalLM` with
`AutoConfig` / `AutoModelForCausalLM`, so a process that imported llmforge loads the custom
family with stock `from_pretrained`, without `trust_remote_code`. The custom class runs our
GPT inside and has no KV cache: generation recomputes the prefix each step.

`load_gpt` reads our export, the custom family, or a stock Llama/Qwen3/SmolLM3 checkpoint
(the mapping and the parity check that proves it live in hf_stock.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GenerationConfig,
    GenerationMixin,
    LlamaConfig,
    PreTrainedConfig,
    PreTrainedModel,
    Qwen3Config,
    SmolLM3Config,
)
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from llmforge.causal_lm import read_json_object as _read_json
from llmforge.config import from_dict, to_dict
from llmforge.errors import BadInput, ConfigError
from llmforge.model import hf_stock
from llmforge.model.gpt import GPT, ModelConfig, rope_frequencies

OUR_CONFIG = "llmforge_model.json"
WEIGHTS = "model.safetensors"
# Files of the source model that export writes itself, or that must not travel (stale
# weight shards beside the new model.safetensors would be what a sharded loader reads).
_NOT_TOKENIZER_FILES = {"manifest.json", "metrics.jsonl", "config.json", "generation_config.json",
                        OUR_CONFIG}  # fmt: skip
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".index.json", ".gguf", ".msgpack",
                    ".h5", ".ckpt")  # fmt: skip

# ---------------------------------------------------------------- the custom family


class LLMForgeConfig(PreTrainedConfig):
    """transformers config for models no stock family covers; `llmforge` is our ModelConfig."""

    model_type = "llmforge"

    def __init__(self, llmforge: dict | None = None, **kwargs):
        self.llmforge = llmforge or to_dict(ModelConfig())
        cfg = from_dict(ModelConfig, self.llmforge)
        # The standard names, for tools that read sizes from any config.
        self.hidden_size, self.num_hidden_layers = cfg.d_model, cfg.n_layers
        self.num_attention_heads, self.num_key_value_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim, self.intermediate_size = cfg.head_size, cfg.ffn_hidden
        self.max_position_embeddings = cfg.max_seq_len
        self.final_logit_softcapping = cfg.logit_softcap  # read by TRL's fused LM head
        kwargs.setdefault("vocab_size", cfg.vocab_size)
        kwargs.setdefault("tie_word_embeddings", cfg.tie_embeddings)
        kwargs.setdefault("use_cache", False)
        super().__init__(**kwargs)


class LLMForgeDecoder(nn.Module):
    """GPT up to its final norm, called the way transformers calls a decoder.

    TRL's SFT/KTO/GRPO trainers (1.16) run `model.base_model(**batch)` and project
    `last_hidden_state` through `get_output_embeddings()` themselves (soft-capping with the
    config's `final_logit_softcapping`), and llmforge's fused SFT loss reads
    `get_decoder()`; both get this view of the model's own GPT.
    """

    _tp_plan = _pp_plan = None  # what transformers asks a base model for

    def __init__(self, gpt: GPT):
        super().__init__()
        object.__setattr__(self, "gpt", gpt)  # not a submodule: no second copy of the weights

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        doc_ids = _documents(attention_mask, position_ids)
        hidden, _ = self.gpt.hidden_states(input_ids, doc_ids=doc_ids, positions=position_ids)
        return BaseModelOutputWithPast(last_hidden_state=hidden)


class LLMForgeForCausalLM(PreTrainedModel, GenerationMixin):
    """Our GPT behind the transformers causal-LM interface (logits, loss, generate)."""

    config_class = LLMForgeConfig
    base_model_prefix = "model"
    _no_split_modules = ["Block"]
    supports_gradient_checkpointing = True  # sets GPT.gradient_checkpointing

    def __init__(self, config: LLMForgeConfig):
        super().__init__(config)
        cfg = from_dict(ModelConfig, config.llmforge)
        self.model = GPT(cfg)
        object.__setattr__(self, "_decoder", LLMForgeDecoder(self.model))
        if cfg.tie_embeddings:
            self._tied_weights_keys = {"model.lm_head.weight": "model.embed_tokens.weight"}
        self.post_init()

    def _init_weights(self, module):
        """GPT initialises its weights itself and from_pretrained overwrites them; only the
        RoPE buffer, which no checkpoint holds, must be computed after loading."""
        if isinstance(module, GPT):
            inv_freq, module.rope_scale = rope_frequencies(module.cfg)
            module.inv_freq.copy_(inv_freq)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.model.lm_head

    @property
    def base_model(self) -> nn.Module:
        return self._decoder

    def get_decoder(self) -> nn.Module:
        return self._decoder

    def forward(self, input_ids, attention_mask=None, position_ids=None, labels=None, **kwargs):
        """Logits, and with `labels` the next-token loss as stock transformers models give it:
        the token mean, or with `num_items_in_batch` (what Trainer passes under gradient
        accumulation) the token sum divided by it, so accumulated micro-batches add up to
        the mean over the whole optimizer step."""
        doc_ids = _documents(attention_mask, position_ids)
        logits = self.model(input_ids, doc_ids=doc_ids, positions=position_ids).logits
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        # No KV cache: feed the whole sequence every step.
        return {"input_ids": input_ids, "attention_mask": attention_mask}


def _documents(attention_mask, position_ids) -> torch.Tensor | None:
    """Document ids for padded or packed rows, or None for plain causal rows.

    A document starts where the attention mask changes value (padding becomes a document of
    its own, so real tokens never see it and, after left padding, start at position 0) or
    where position_ids do not continue by +1 (TRL's padding-free packing, as stock models
    read it). One host sync at most (`starts.any()`): whether to take the plain causal
    kernel is decided on the host. An all-ones mask has no change, so it needs no check
    of its own.
    """
    starts = None
    if attention_mask is not None:
        starts = attention_mask[:, 1:] != attention_mask[:, :-1]
    if position_ids is not None:
        jumps = (position_ids[:, 1:] - position_ids[:, :-1]) != 1
        starts = jumps if starts is None else starts | jumps
    if starts is None or not bool(starts.any()):
        return None
    return F.pad(starts.long(), (1, 0)).cumsum(dim=1)


AutoConfig.register("llmforge", LLMForgeConfig, exist_ok=True)
AutoModelForCausalLM.register(LLMForgeConfig, LLMForgeForCausalLM, exist_ok=True)

# ---------------------------------------------------------------- export


def hf_architecture(cfg: ModelConfig) -> str:
    """The family export writes: 'llama', 'qwen3', 'smollm3' or 'llmforge' (custom)."""
    custom = (
        cfg.gated_attn
        or cfg.logit_softcap is not None
        or cfg.attn_softcap is not None
        or cfg.embed_multiplier != 1.0
        or cfg.moe.n_experts > 0
        or (cfg.qk_norm and cfg.nope_every > 0)
    )
    if custom:
        return "llmforge"
    if cfg.qk_norm:
        return "qwen3"
    return "smollm3" if cfg.nope_every > 0 else "llama"


_FAMILIES = {
    "llama": (LlamaConfig, "LlamaForCausalLM"),
    "qwen3": (Qwen3Config, "Qwen3ForCausalLM"),
    "smollm3": (SmolLM3Config, "SmolLM3ForCausalLM"),
    "llmforge": (LLMForgeConfig, "LLMForgeForCausalLM"),
}


def hf_config(
    cfg: ModelConfig,
    special_tokens: dict | None = None,
    family: str | None = None,
    base_config: dict | None = None,
) -> PreTrainedConfig:
    """The transformers config of `family`, by default the one `hf_architecture(cfg)` picks.

    A SmolLM3 checkpoint whose layers all use RoPE stays SmolLM3 when asked (its features
    alone would make it a Llama); any other family the features do not allow is refused.
    `base_config` (a continued stock checkpoint's config.json) is kept but for the fields
    `cfg` decides, its own token ids included."""
    picked = hf_architecture(cfg)
    family = family or picked
    if family != picked and (family, picked) != ("smollm3", "llama"):
        raise ValueError(f"a model with these features exports as {picked}, not {family}")
    config_cls, class_name = _FAMILIES[family]
    if base_config is not None:
        config = hf_stock.continued_config(base_config, cfg, family)
        config.architectures = config.architectures or [class_name]
        return config
    common = dict(
        vocab_size=cfg.vocab_size, tie_word_embeddings=cfg.tie_embeddings,
        architectures=[class_name], **(special_tokens or {}),
    )  # fmt: skip
    if family == "llmforge":
        return config_cls(llmforge=to_dict(cfg), **common)
    common.update(hf_stock.architecture_fields(cfg, family))
    common.update(initializer_range=cfg.init_std, attention_bias=False, hidden_act="silu")
    if family == "llama":
        return config_cls(mlp_bias=False, **common)
    return config_cls(use_sliding_window=False, **common)


def export_hf(
    model: GPT,
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    *,
    dtype: torch.dtype | None = None,
    family: str | None = None,
    base_config: dict | None = None,
) -> None:
    """Write config.json, generation_config.json, model.safetensors, llmforge_model.json and
    the tokenizer files. `dtype` (e.g. torch.bfloat16) casts the weights; default: as is.
    `family` and `base_config` keep a continued checkpoint's architecture and config.json
    (see `hf_config`); a source generation_config.json (sampling defaults, stop ids) is
    kept as it is."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    special = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)  # not Llama's 1, 2
    stop_ids: list[int] = []
    if tokenizer_dir is not None:
        special, stop_ids = _copy_tokenizer(Path(tokenizer_dir), out)
    state = _hf_state_dict(model, dtype)
    config = hf_config(model.cfg, special, family, base_config)
    config.dtype = dtype or model.embed_tokens.weight.dtype
    config.save_pretrained(out)
    if tokenizer_dir is not None and (Path(tokenizer_dir) / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(str(tokenizer_dir))
    else:
        generation = GenerationConfig.from_model_config(config)
        if stop_ids:
            generation.eos_token_id = stop_ids
    generation.save_pretrained(out)
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt"})
    (out / OUR_CONFIG).write_text(json.dumps(to_dict(model.cfg), indent=2) + "\n")


def random_llama(tokenizer, hidden: int, layers: int, ffn_hidden: int | None = None,
                 max_positions: int = 512, seed: int = 0):  # fmt: skip
    """A randomly initialised stock Llama sized for `tokenizer`'s vocabulary (4 heads, 2 KV
    heads, tied embeddings): the stand-in model of tests and benchmarks, which cannot
    download one."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=ffn_hidden or 2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=max_positions, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )  # fmt: skip
    return LlamaForCausalLM(cfg)


def _hf_state_dict(model: GPT, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Our names with transformers' prefixes; a tied head is stored once (as the embedding)."""
    custom = hf_architecture(model.cfg) == "llmforge"
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.cfg.tie_embeddings:
            continue
        key = name if name == "lm_head.weight" and not custom else "model." + name
        tensor = tensor.detach()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[key] = tensor.contiguous().clone()
    return state


def _copy_tokenizer(src: Path, out: Path) -> tuple[dict, list[int]]:
    """Copy the tokenizer files (and a checkpoint's README/LICENSE, which travel with its
    weights). Returns its bos/eos/pad ids for the model config, and the ids generation
    stops at: eos, plus <|im_end|> when the (ChatML) vocabulary has it."""
    from transformers import AutoTokenizer

    if not src.is_dir():
        raise BadInput("tokenizer directory not found", path=str(src))
    for f in src.iterdir():
        skip = f.name in _NOT_TOKENIZER_FILES or f.name.endswith(_WEIGHT_SUFFIXES)
        if f.is_file() and not skip:
            shutil.copy2(f, out / f.name)
    tok = AutoTokenizer.from_pretrained(str(src))
    eos, im_end = tok.eos_token_id, tok.get_vocab().get("<|im_end|>")
    special = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else eos,
    }
    stop_ids = [i for i in (eos, im_end) if i is not None]
    return special, list(dict.fromkeys(stop_ids))


# ---------------------------------------------------------------- import


def load_gpt(model_dir: str | Path) -> GPT:
    """A GPT from our export (llmforge_model.json) or a stock Llama/Qwen3/SmolLM3 directory."""
    path = Path(model_dir)
    ours, hf_file = path / OUR_CONFIG, path / "config.json"
    try:
        if ours.is_file():
            cfg = from_dict(ModelConfig, _read_json(ours))
        elif hf_file.is_file():
            hf = _read_json(hf_file)
            if hf.get("model_type") == "llmforge":  # our custom family saved by transformers/TRL
                cfg = from_dict(ModelConfig, hf.get("llmforge", {}))
            else:
                cfg = hf_stock.config_from_hf(hf, hf_file)
        else:
            raise BadInput(f"no {OUR_CONFIG} or config.json: not a model directory", path=str(path))
    except ConfigError as e:
        raise BadInput(str(e), path=str(ours if ours.is_file() else hf_file)) from None
    model = GPT(cfg)
    state = {_our_key(k): v for k, v in _read_weights(path).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if cfg.tie_embeddings and "lm_head.weight" in missing:
        missing.remove("lm_head.weight")
    if missing or unexpected:
        raise BadInput(
            f"weights do not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}",
            path=str(path),
        )
    return model


def _our_key(hf_key: str) -> str:
    return hf_key.removeprefix("model.")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, or every shard a model.safetensors.index.json lists."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (path / WEIGHTS).is_file():
        shards = [WEIGHTS]
    else:
        raise BadInput("no model.safetensors (only safetensors weights are read)", path=str(path))
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(str(path / shard)))
    return state
