"""The llmforge model: a dense (or MoE) decoder-only transformer in one readable file.

Features, each switched by a `ModelConfig` field:

- grouped-query attention (any number of KV heads dividing the query heads; a head size
  of its own, `head_dim`, as Qwen3), SwiGLU MLP, RMSNorm (pre-norm), tied or untied
  embeddings, optional embedding scaling;
- RoPE with a configurable base (ABF = a larger `rope_theta`), YaRN or Llama 3's scaling,
  and NoPE on every `nope_every`-th layer (RNoPE, as in SmolLM3);
- QK-norm (RMSNorm per head on q and k before RoPE, as in Qwen3);
- gated attention: `o_proj(attn * sigmoid(gate(x)))`, one gate per head channel (Qwen3-Next);
- soft-capping of the final logits, and of attention scores (FlexAttention on CUDA, eager
  attention on CPU; see attention.py);
- z-loss, fused linear cross-entropy (no [N, V] logits in memory);
- intra-document masking for packed rows, with RoPE positions restarting per document;
- MoE layers with top-k sigmoid routing, an optional shared expert and DeepSeek-V3's
  auxiliary-loss-free balancing (a per-expert bias used only to pick experts).

Module names follow transformers' Llama (`model.layers.0.self_attn.q_proj`, ...), so export
to Llama, Qwen3 and SmolLM3 is a key rename (see hf.py). Parallelism lives in
parallelize.py, expert_parallel.py and context_parallel.py, not here: this file only has
the two hooks they set (`MoE.dispatch`, `Attention.sequence_parallel`), and MuonClip's
max-logit probe (`Attention.max_logit`). Collectives live in llmforge/distributed.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from llmforge import distributed
from llmforge.config import check, param
from llmforge.model.attention import CausalMask, attention, document_positions, max_logits
from llmforge.ops import apply_rope, linear_cross_entropy, rms_norm, swiglu

# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling: YaRN (context-extend's) or llama3 (Llama 3.1/3.2 checkpoints)."""

    type: Literal["none", "yarn", "llama3"] = param(
        "none", "'yarn' (YaRN) or 'llama3' (Llama 3.1/3.2) rescale the RoPE frequencies"
    )
    factor: float = param(1.0, "new context length / original_max_seq_len")
    original_max_seq_len: int = param(0, "the context length before extension")
    beta_fast: float = param(32.0, "YaRN: rotations above which frequencies are kept")
    beta_slow: float = param(1.0, "YaRN: rotations below which frequencies are interpolated")
    low_freq_factor: float = param(1.0, "llama3: wavelengths over original/this are divided")
    high_freq_factor: float = param(4.0, "llama3: wavelengths under original/this are kept")

    def __post_init__(self):
        llama3 = self.type == "llama3"
        check(self.type != "yarn" or self.factor > 1.0, "factor", "YaRN needs factor > 1")
        check(not llama3 or self.factor >= 1.0, "factor", "llama3 needs factor >= 1")
        check(not llama3 or 0 < self.low_freq_factor < self.high_freq_factor,
              "high_freq_factor", "llama3 needs 0 < low_freq_factor < high_freq_factor")  # fmt: skip
        check(self.type == "none" or self.original_max_seq_len > 0, "original_max_seq_len",
              "must be > 0 when RoPE is scaled")  # fmt: skip


@dataclass(frozen=True)
class MoEConfig:
    """Mixture-of-experts MLPs; n_experts = 0 means a dense model."""

    n_experts: int = param(0, "routed experts per MoE layer (0 = dense model)")
    top_k: int = param(2, "experts each token is routed to")
    expert_hidden: int = param(0, "hidden size of each expert (0 = ffn_hidden)")
    shared_expert: bool = param(False, "add one always-on expert (DeepSeek style)")
    dense_layers: int = param(0, "the first N layers keep a dense MLP")

    def __post_init__(self):
        check(self.n_experts >= 0, "n_experts", "must be >= 0")
        check(self.expert_hidden >= 0, "expert_hidden", "must be >= 0")
        check(self.dense_layers >= 0, "dense_layers", "must be >= 0")
        if self.n_experts:
            check(1 <= self.top_k <= self.n_experts, "top_k", "must be in [1, n_experts]")


@dataclass(frozen=True)
class ModelConfig:
    """Shape and features of the decoder; see the module docstring."""

    vocab_size: int = param(256, "vocabulary size (embedding rows)")
    d_model: int = param(64, "hidden size")
    n_layers: int = param(2, "transformer blocks")
    n_heads: int = param(4, "query heads")
    n_kv_heads: int = param(2, "key/value heads (GQA); must divide n_heads")
    head_dim: int = param(0, "size of each attention head; 0 = d_model / n_heads (Qwen3: 128)")
    ffn_hidden: int = param(172, "SwiGLU hidden size")
    max_seq_len: int = param(512, "longest sequence the model is configured for")
    rope_theta: float = param(10000.0, "RoPE base; raise it for ABF context extension")
    nope_every: int = param(0, "no RoPE on every Nth layer (layers N-1, 2N-1, ...); 0 = never")
    rope_scaling: RopeScaling = param(RopeScaling(), "YaRN or llama3 RoPE scaling")
    qk_norm: bool = param(False, "RMSNorm on each head's q and k before RoPE")
    gated_attn: bool = param(False, "sigmoid gate on each attention head's output")
    tie_embeddings: bool = param(True, "share the input embedding and output head")
    logit_softcap: float | None = param(None, "cap final logits to +-c with c*tanh(x/c)")
    attn_softcap: float | None = param(None, "cap attention scores to +-c (no SDPA fast path)")
    embed_scale: bool | float = param(False, "scale embeddings: true = sqrt(d_model), or a number")
    init_std: float = param(0.02, "std of the truncated-normal init (residual outs: / sqrt(2L))")
    norm_eps: float = param(1e-6, "RMSNorm epsilon")
    fused_ce: bool = param(True, "fused linear cross-entropy: no logits when targets are given")
    moe: MoEConfig = param(MoEConfig(), "mixture of experts")

    def __post_init__(self):
        for key in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden"):
            check(getattr(self, key) > 0, key, "must be > 0")
        check(self.head_dim >= 0, "head_dim", "must be >= 0 (0 = d_model / n_heads)")
        if self.head_dim == 0:
            check(self.d_model % self.n_heads == 0, "d_model", "must be a multiple of n_heads")
        check(self.n_heads % self.n_kv_heads == 0, "n_kv_heads", "must divide n_heads")
        check(self.head_size % 2 == 0, "head_dim" if self.head_dim else "d_model",
              "the head size must be even for RoPE")  # fmt: skip
        check(self.max_seq_len > 0, "max_seq_len", "must be > 0")
        check(self.rope_theta > 0, "rope_theta", "must be > 0")
        check(self.nope_every >= 0, "nope_every", "must be >= 0")
        for key in ("logit_softcap", "attn_softcap"):
            value = getattr(self, key)
            check(value is None or value > 0, key, "must be > 0 or null")
        check(self.init_std > 0, "init_std", "must be > 0")
        check(self.norm_eps > 0, "norm_eps", "must be > 0")
        check(self.embed_multiplier > 0, "embed_scale", "must be > 0")

    @property
    def head_size(self) -> int:
        """The size of each attention head: `head_dim`, or d_model / n_heads when it is 0."""
        return self.head_dim or self.d_model // self.n_heads

    @property
    def embed_multiplier(self) -> float:
        if isinstance(self.embed_scale, bool):
            return math.sqrt(self.d_model) if self.embed_scale else 1.0
        return float(self.embed_scale)

    def uses_rope(self, layer: int) -> bool:
        """False for the NoPE layers: every `nope_every`-th one, counting from 1."""
        return self.nope_every == 0 or (layer + 1) % self.nope_every != 0

    def is_moe(self, layer: int) -> bool:
        return self.moe.n_experts > 0 and layer >= self.moe.dense_layers


def rope_frequencies(cfg: ModelConfig) -> tuple[Tensor, float]:
    """RoPE inverse frequencies [head_size / 2] and the cos/sin scale (1 unless YaRN)."""
    dim = cfg.head_size
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    scaling = cfg.rope_scaling
    if scaling.type == "yarn":
        return _yarn(inv_freq, scaling, dim, cfg.rope_theta)
    if scaling.type == "llama3":
        return _llama3(inv_freq, scaling), 1.0
    return inv_freq, 1.0


def _yarn(inv_freq: Tensor, scaling: RopeScaling, dim: int, theta: float) -> tuple[Tensor, float]:
    """YaRN, after the paper (and transformers' `_compute_yarn_parameters`, which the tests
    compare against): high frequencies are kept, low ones divided by `factor`, with a
    linear ramp between, and q and k are each scaled by 0.1 ln(factor) + 1."""

    def correction_dim(rotations: float) -> float:
        wavelength = scaling.original_max_seq_len / (rotations * 2 * math.pi)
        return dim * math.log(wavelength) / (2 * math.log(theta))

    low = max(math.floor(correction_dim(scaling.beta_fast)), 0)
    high = min(math.ceil(correction_dim(scaling.beta_slow)), dim - 1)
    high = high + 0.001 if high == low else high
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # 1 = extrapolate (keep the frequency), 0 = interpolate
    inv_freq = inv_freq / scaling.factor * (1 - keep) + inv_freq * keep
    return inv_freq, 0.1 * math.log(scaling.factor) + 1.0


def _llama3(inv_freq: Tensor, scaling: RopeScaling) -> Tensor:
    """Llama 3.1's scaling (transformers' `_compute_llama3_parameters`, compared in the
    tests): wavelengths shorter than original / high_freq_factor keep their frequency,
    those longer than original / low_freq_factor are slowed by `factor`, and in between
    the two are mixed by how many times the wavelength fits in the original context."""
    original, factor = scaling.original_max_seq_len, scaling.factor
    wavelength = 2 * math.pi / inv_freq
    fits = original / wavelength  # wavelengths per original context
    smooth = (fits - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
    mixed = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    slowed = torch.where(wavelength > original / scaling.low_freq_factor, inv_freq / factor, mixed)
    return torch.where(wavelength < original / scaling.high_freq_factor, inv_freq, slowed)


# ---------------------------------------------------------------- layers


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, eps=self.eps)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


class MoE(nn.Module):
    """Top-k routed experts with DeepSeek-V3's auxiliary-loss-free load balancing.

    Scores are sigmoid(router(x)). `expert_bias` is added to the scores only to choose
    the top-k experts; the mixing weights are the chosen unbiased scores, normalised to
    sum to 1. `expert_load` accumulates tokens per expert (GPT.forward adds each training
    batch's) until `GPT.update_moe_bias` reads it.
    Experts run one after another: readable, and fine at the sizes this runs on CPU. With
    expert parallelism (expert_parallel.py) each rank keeps a share of the experts and
    `dispatch` sends the tokens to the rank that owns their expert and back.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        n, hidden = cfg.moe.n_experts, cfg.moe.expert_hidden or cfg.ffn_hidden
        self.n_experts, self.top_k = n, cfg.moe.top_k
        self.router = nn.Linear(cfg.d_model, n, bias=False)
        self.experts = nn.ModuleList(MLP(cfg.d_model, hidden) for _ in range(n))
        self.shared_expert = MLP(cfg.d_model, hidden) if cfg.moe.shared_expert else None
        self.register_buffer("expert_bias", torch.zeros(n))
        self.register_buffer("expert_load", torch.zeros(n), persistent=False)
        self.dispatch = None  # expert parallelism: (moe, flat, chosen, weights) -> output

    def route(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        """Chosen experts [N, k] and their mixing weights [N, k] (fp32)."""
        scores = torch.sigmoid(self.router(flat).float())
        chosen = torch.topk(scores + self.expert_bias, self.top_k, dim=-1).indices
        weights = scores.gather(-1, chosen)
        return chosen, weights / weights.sum(dim=-1, keepdim=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        flat = x.reshape(-1, x.shape[-1])
        chosen, weights = self.route(flat)
        if self.dispatch is None:
            out = self.run_experts(flat, chosen, weights)
        else:
            out = self.dispatch(self, flat, chosen, weights)
        if self.shared_expert is not None:
            out = out + self.shared_expert(flat)
        load = torch.bincount(chosen.flatten(), minlength=self.n_experts).float()
        return out.view_as(x), load

    def run_experts(self, flat: Tensor, chosen: Tensor, weights: Tensor) -> Tensor:
        """sum_k weight_k * expert_k(token), all experts on this rank."""
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            # Every expert runs, even on zero tokens, so each rank produces a gradient for
            # every parameter (FSDP reduce-scatters whole parameter groups).
            token, slot = torch.where(chosen == e)
            mixed = expert(flat[token]) * weights[token, slot, None].to(flat.dtype)
            out = out.index_add(0, token, mixed)
        return out


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, use_rope: bool):
        super().__init__()
        h, kv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_size
        self.n_heads, self.n_kv_heads, self.head_dim = h, kv, d
        self.use_rope, self.softcap = use_rope, cfg.attn_softcap
        self.q_proj = nn.Linear(cfg.d_model, h * d, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, kv * d, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, kv * d, bias=False)
        self.o_proj = nn.Linear(h * d, cfg.d_model, bias=False)
        self.q_norm = RMSNorm(d, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(d, cfg.norm_eps) if cfg.qk_norm else None
        self.gate = nn.Linear(cfg.d_model, h * d, bias=False) if cfg.gated_attn else None
        # MuonClip's probe (train/qk_clip.py): while this is a [n_heads] tensor, training
        # forwards keep each head's largest attention logit in it.
        self.max_logit: Tensor | None = None
        # Context parallelism (context_parallel.py) sets this to a function that runs
        # `attend` on the whole sequence for a share of the heads.
        self.sequence_parallel = None

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor, float], mask: CausalMask) -> Tensor:
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(b, s, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, s, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.use_rope:
            positions, inv_freq, scale = rope
            q = apply_rope(q, positions, inv_freq, scale=scale)
            k = apply_rope(k, positions, inv_freq, scale=scale)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.sequence_parallel is None:
            y = self.attend(q, k, v, mask)
        else:
            y = self.sequence_parallel(self.attend, q, k, v, mask)
        y = y.transpose(1, 2).reshape(b, s, self.n_heads * self.head_dim)
        if self.gate is not None:
            y = y * torch.sigmoid(self.gate(x))
        return self.o_proj(y)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: CausalMask, first_head: int = 0):
        """Attention over [B, heads, S, D]; the heads are first_head.. of this layer."""
        if self.max_logit is not None and self.training:
            heads = slice(first_head, first_head + q.shape[1])
            seen = max_logits(q, k, mask).to(self.max_logit.device)
            self.max_logit[heads] = torch.maximum(self.max_logit[heads], seen)
        return attention(q, k, v, mask, self.softcap)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg, use_rope=cfg.uses_rope(layer))
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MoE(cfg) if cfg.is_moe(layer) else MLP(cfg.d_model, cfg.ffn_hidden)

    def forward(self, x: Tensor, rope, mask: CausalMask) -> tuple[Tensor, Tensor | None]:
        x = x + self.self_attn(self.input_layernorm(x), rope, mask)
        out = self.mlp(self.post_attention_layernorm(x))
        out, load = out if isinstance(out, tuple) else (out, None)
        return x + out, load


# ---------------------------------------------------------------- the model


class ModelOutput(NamedTuple):
    logits: Tensor | None  # [B, S, V]; None when targets are given and cfg.fused_ce
    loss: Tensor | None  # ce + z_loss * z
    ce: Tensor | None  # mean cross-entropy over targets != -100
    z: Tensor | None  # mean logsumexp(logits)^2 over the same tokens
    aux: dict  # "moe_load": tokens per expert [moe layers, experts] for this batch


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.register_buffer("inv_freq", torch.empty(cfg.head_size // 2), persistent=False)
        # Recompute each block in backward instead of storing its activations. The name is
        # the attribute transformers' gradient_checkpointing_enable() switches on.
        self.gradient_checkpointing = False
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Truncated normal (+-3 std) for every matrix, residual outputs scaled by 1/sqrt(2L).

        Also recomputes the RoPE buffer and re-ties the head, so it can be called after
        building on the meta device and materialising with `to_empty` (which unties).
        """
        if self.cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        std = self.cfg.init_std
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                if module is self.lm_head and self.cfg.tie_embeddings:
                    continue
                out = name.endswith(("o_proj", "down_proj"))
                s = std / math.sqrt(2 * self.cfg.n_layers) if out else std
                nn.init.trunc_normal_(module.weight, std=s, a=-3 * s, b=3 * s)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
            elif isinstance(module, MoE):
                module.expert_bias.zero_()
                module.expert_load.zero_()
        inv_freq, self.rope_scale = rope_frequencies(self.cfg)
        self.inv_freq.copy_(inv_freq.to(self.inv_freq.device))

    def forward(
        self,
        input_ids: Tensor,
        targets: Tensor | None = None,
        doc_ids: Tensor | None = None,
        positions: Tensor | None = None,
        z_loss: float = 0.0,
        mask: CausalMask | None = None,
    ) -> ModelOutput:
        """input_ids [B, S]; targets [B, S] with -100 ignored; doc_ids [B, S] per-token document.

        `mask` replaces the one built from doc_ids: context parallelism passes the whole
        row's while input_ids holds this rank's part of it.
        """
        b, s = input_ids.shape
        x, aux = self.hidden_states(input_ids, doc_ids, positions, mask)
        if targets is None:
            return ModelOutput(self.logits(x), None, None, None, aux)
        if self.cfg.fused_ce:
            loss, ce, z, _ = linear_cross_entropy(
                x.reshape(b * s, -1), self.lm_head.weight, targets.reshape(-1),
                z_loss=z_loss, softcap=self.cfg.logit_softcap,
            )  # fmt: skip
            return ModelOutput(None, loss, ce, z, aux)
        logits = self.logits(x)
        ce, z = _cross_entropy_and_z(logits, targets)
        return ModelOutput(logits, ce + z_loss * z, ce, z, aux)

    def hidden_states(self, input_ids: Tensor, doc_ids: Tensor | None = None,
                      positions: Tensor | None = None,
                      mask: CausalMask | None = None) -> tuple[Tensor, dict]:  # fmt: skip
        """The final-norm hidden states [B, S, d_model] (what the head reads), and `aux`."""
        b, s = input_ids.shape
        if positions is None and doc_ids is not None:
            positions = document_positions(doc_ids)
        elif positions is None:
            positions = torch.arange(s, device=input_ids.device).expand(b, s)
        if mask is None:
            mask = CausalMask(s, doc_ids, device=input_ids.device)
        inv_freq = self.inv_freq
        if inv_freq.dtype != torch.float32:  # the model was cast (e.g. .bfloat16()): recompute
            inv_freq = rope_frequencies(self.cfg)[0].to(input_ids.device)
        rope = (positions, inv_freq, self.rope_scale)
        x = self.embed_tokens(input_ids)
        if self.cfg.embed_multiplier != 1.0:
            x = x * self.cfg.embed_multiplier
        loads = []
        for block in self.layers:
            if self.gradient_checkpointing and self.training:
                x, load = checkpoint(block, x, rope, mask, use_reentrant=False)
            else:
                x, load = block(x, rope, mask)
            if load is not None:
                loads.append(load)
        aux = {"moe_load": torch.stack(loads)} if loads else {}
        if loads and self.training:  # counted here, not in MoE, so recomputation counts once
            with torch.no_grad():
                for moe, load in zip(self.moe_layers(), loads):
                    moe.expert_load += load
        return self.norm(x), aux

    def logits(self, hidden: Tensor) -> Tensor:
        """Final-norm hidden states -> (soft-capped) logits."""
        logits = self.lm_head(hidden)
        cap = self.cfg.logit_softcap
        return logits if cap is None else cap * torch.tanh(logits / cap)

    # ------------------------------------------------------------ training helpers

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay on matrices; none on embeddings, norms and biases."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():  # a tied head yields the embedding only
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or name.startswith("embed_tokens") else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]

    def muon_params(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(2-D matrices inside the blocks, for Muon; everything else, for AdamW)."""
        hidden, rest = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (hidden if p.ndim == 2 and name.startswith("layers.") else rest).append(p)
        return hidden, rest

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameter count; a tied head counts once. Without embeddings drops the input table."""
        total = sum(p.numel() for p in self.parameters())
        return total - self.embed_tokens.weight.numel() if exclude_embeddings else total

    def moe_layers(self) -> list[MoE]:
        return [block.mlp for block in self.layers if isinstance(block.mlp, MoE)]

    @torch.no_grad()
    def update_moe_bias(self, rate: float) -> dict:
        """Nudge each expert's routing bias by `rate` toward equal load; call after a step.

        Loads counted since the last call are summed over ranks (`llmforge.distributed`),
        so every rank applies the same update. Returns routing statistics:
        tokens per expert (summed over MoE layers) and the worst layer's max load / mean.
        """
        moes = self.moe_layers()
        if not moes:
            return {}
        load = distributed.all_reduce(torch.stack([m.expert_load for m in moes]))
        mean = load.mean(dim=-1, keepdim=True)
        for moe, layer_load, layer_mean in zip(moes, load, mean):
            moe.expert_bias += rate * torch.sign(layer_mean - layer_load)
            moe.expert_load.zero_()
        imbalance = (load.max(dim=-1).values / mean.squeeze(-1).clamp(min=1e-9)).max()
        return {"moe_tokens_per_expert": load.sum(0).tolist(), "moe_imbalance": imbalance.item()}


def _cross_entropy_and_z(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and mean squared log-partition over targets != -100 (fp32)."""
    logits = logits.float().flatten(0, 1)
    targets = targets.flatten()
    valid = targets != -100
    ce = F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum")
    z = (torch.logsumexp(logits, dim=-1).pow(2) * valid).sum()
    count = valid.sum().clamp(min=1)
    return ce / count, z / count
