"""Pure-torch reference implementations of the fused ops.

These are the ground truth the Triton kernels are tested against, and the path every
non-CUDA run takes (RMSNorm, SwiGLU and RoPE; the linear cross-entropy has its own
chunked torch path in `linear_ce.py`). They are written for clarity: autograd gives the
backward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rms_norm_reference(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    """RMSNorm over the last dim, computed in fp32, returned in x.dtype."""
    x32 = x.float()
    rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (x32 * rstd * weight.float()).to(x.dtype)


def swiglu_reference(gate: Tensor, up: Tensor) -> Tensor:
    """silu(gate) * up, computed in fp32, returned in gate.dtype."""
    return (F.silu(gate.float()) * up.float()).to(gate.dtype)


def rope_cos_sin(positions: Tensor, inv_freq: Tensor, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """cos and sin of shape [B, S, 1, D] (rotate_half layout), in fp32, times `scale`."""
    angle = positions.float()[..., None] * inv_freq.float()  # [B, S, D/2]
    angle = torch.cat([angle, angle], dim=-1)[:, :, None, :]
    return angle.cos() * scale, angle.sin() * scale


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dim (HF Llama convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope_reference(
    x: Tensor, positions: Tensor, inv_freq: Tensor, scale: float = 1.0
) -> Tensor:
    """Rotate x [B, S, H, D] by angle positions * inv_freq; computed in fp32."""
    cos, sin = rope_cos_sin(positions, inv_freq, scale)
    x32 = x.float()
    return (x32 * cos + rotate_half(x32) * sin).to(x.dtype)


def transform_logits(logits: Tensor, softcap: float | None, temperature: float) -> Tensor:
    """Final-logit soft-capping first (part of the model), then temperature (sampling)."""
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    if temperature != 1.0:
        logits = logits / temperature
    return logits


def linear_cross_entropy_reference(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    ignore_index: int = -100,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Naive logits-then-cross-entropy: materialises all [N, V] logits in fp32.

    Returns (loss, ce, z, logprobs) with the same meaning as `linear_cross_entropy`.
    """
    logits = F.linear(hidden, weight, bias).float()
    logits = transform_logits(logits, softcap, temperature)
    valid = targets != ignore_index
    safe_targets = torch.where(valid, targets, torch.zeros_like(targets))
    lse = torch.logsumexp(logits, dim=-1)
    target_logit = logits.gather(1, safe_targets[:, None]).squeeze(1)
    logprobs = torch.where(valid, target_logit - lse, torch.zeros_like(lse))
    ce_sum = -logprobs.sum()
    z_sum = (lse.pow(2) * valid).sum()
    denom = valid.sum().clamp(min=1) if reduction == "mean" else 1
    ce, z = ce_sum / denom, z_sum / denom
    return ce + z_loss * z, ce, z, logprobs
