"""MuonClip's QK-clip (Kimi K2): keep each head's largest attention logit at or under tau.

During every training forward the attention layers record each head's largest logit
S_h = max q.k / sqrt(d) (the probe in model/gpt.py `Attention.attend`). After the
optimizer step, a head with S_h > tau gets gamma_h = tau / S_h, and its query and key
weights are rescaled so that its logits shrink by exactly gamma_h:

- plain multi-head attention: W_q and W_k of the head each by sqrt(gamma_h), as in K2;
- grouped-query attention: a KV head serves several query heads, so W_k of a group is
  scaled by sqrt(g) with g the group's largest gamma (1 unless every head in it passed
  tau) and W_q of each head by gamma_h / sqrt(g). Heads under tau keep their logits, and
  no factor exceeds 1 (the shared-key case of K2's MLA, where only q takes the factor,
  is the extreme of this split);
- QK-norm: RMSNorm undoes any scaling of W_q and W_k, and its gain is shared by all
  heads, so the layer's smallest gamma scales both gains by sqrt(gamma);
- RoPE (and YaRN's scale) is linear in q and k, so rescaling before it rescales the logit.

The largest logits are reduced (max) over ranks first, so every rank applies the same
factors. The probe costs one extra Q K^T per layer and step, computed in blocks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from llmforge import distributed
from llmforge.model.gpt import Attention
from llmforge.train.callbacks import Callback

if TYPE_CHECKING:
    from llmforge.train.loop import Loop


def head_gammas(max_logit: Tensor, tau: float) -> Tensor:
    """gamma_h = tau / S_h where S_h > tau, else 1 ([H], fp32)."""
    max_logit = max_logit.float()
    return torch.where(max_logit > tau, tau / max_logit, torch.ones_like(max_logit))


def gqa_factors(gamma: Tensor, n_kv_heads: int) -> tuple[Tensor, Tensor]:
    """(factor per query head [H], factor per KV head [Hkv]); q x k factor = gamma_h."""
    groups = gamma.view(n_kv_heads, -1)  # query head h uses KV head h // (H / Hkv)
    k_factor = groups.max(dim=1).values.sqrt()
    return (groups / k_factor[:, None]).flatten(), k_factor


@torch.no_grad()
def scale_heads_(weight: Tensor, factor: Tensor, head_dim: int) -> None:
    """Multiply the output rows of each head of a projection [heads * head_dim, in]."""
    rows = factor.repeat_interleave(head_dim)[:, None].to(weight.device, weight.dtype)
    if hasattr(weight, "device_mesh"):  # an FSDP2 DTensor: shard the factors like the rows
        from torch.distributed.tensor import distribute_tensor

        rows = distribute_tensor(rows, weight.device_mesh, weight.placements)
    weight.mul_(rows)


@torch.no_grad()
def clip_attention_(attn: Attention, max_logit: Tensor, tau: float) -> int:
    """Rescale one layer's q/k so no head's logit exceeds tau; returns the heads clipped."""
    gamma = head_gammas(max_logit, tau)
    clipped = int((gamma < 1).sum())
    if not clipped:
        return 0
    if attn.q_norm is not None:
        factor = float(gamma.min().sqrt())
        attn.q_norm.weight.mul_(factor)
        attn.k_norm.weight.mul_(factor)
        return clipped
    q_factor, k_factor = gqa_factors(gamma, attn.n_kv_heads)
    scale_heads_(attn.q_proj.weight, q_factor, attn.head_dim)
    scale_heads_(attn.k_proj.weight, k_factor, attn.head_dim)
    return clipped


def attention_layers(model: nn.Module) -> list[Attention]:
    return [m for m in model.modules() if isinstance(m, Attention)]


def arm(layers: list[Attention]) -> None:
    """Switch the probe on (or reset it): each layer's largest logit per head, from -inf."""
    for attn in layers:
        device = attn.q_proj.weight.device
        attn.max_logit = torch.full((attn.n_heads,), float("-inf"), device=device)


class QKClip(Callback):
    """After every optimizer step: reduce the probes over ranks, clip, re-arm; log the max."""

    name = "qk_clip"

    def __init__(self, tau: float, log_every: int):
        self.tau, self.log_every = tau, log_every
        self.layers: list[Attention] = []
        self.clipped = 0  # head rescalings since the start (or resume)

    def on_start(self, loop: Loop) -> None:
        self.layers = attention_layers(loop.raw_model)
        arm(self.layers)

    def on_step(self, loop: Loop, result, data_wait: float) -> None:
        logits = torch.stack([attn.max_logit for attn in self.layers])  # [layers, heads]
        logits = distributed.all_reduce(logits, "max")
        clipped = sum(clip_attention_(a, row, self.tau) for a, row in zip(self.layers, logits))
        self.clipped += clipped
        arm(self.layers)
        if loop.step % self.log_every == 0 or loop.step == loop.total_steps:
            loop.log({"step": loop.step, "max_attn_logit": float(logits.max()),
                      "qk_clipped_heads": clipped, "qk_clips_total": self.clipped})  # fmt: skip

    def on_end(self, loop: Loop) -> None:
        for attn in self.layers:
            attn.max_logit = None

    def state_dict(self) -> dict:
        return {"clipped": self.clipped}

    def load_state_dict(self, state: dict) -> None:
        self.clipped = state.get("clipped", 0)
