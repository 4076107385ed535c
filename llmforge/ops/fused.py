"""Autograd wrappers around the Triton kernels for RMSNorm, SwiGLU and RoPE.

`llmforge.ops` calls these when `use_triton` says so; tests may call them directly on
CPU tensors under TRITON_INTERPRET=1. Each saves the least it can for backward: RMSNorm
keeps x and one rstd per row, SwiGLU its two inputs (silu is recomputed), RoPE only the
positions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from llmforge.kernels import rms_norm as _rms
from llmforge.kernels import rope as _rope
from llmforge.kernels import swiglu as _swiglu


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        y, rstd = _rms.rms_norm_fwd(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        dx, dw = _rms.rms_norm_bwd(dy, x, weight, rstd)
        return dx, dw, None


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return _swiglu.swiglu_fwd(gate, up)

    @staticmethod
    def backward(ctx, dy):
        gate, up = ctx.saved_tensors
        return _swiglu.swiglu_bwd(dy, gate, up)


class _RoPE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, positions, inv_freq, scale):
        ctx.save_for_backward(positions, inv_freq)
        ctx.scale = scale
        return _rope.rope(x, positions, inv_freq, scale, inverse=False)

    @staticmethod
    def backward(ctx, dy):
        positions, inv_freq = ctx.saved_tensors
        return _rope.rope(dy, positions, inv_freq, ctx.scale, inverse=True), None, None, None


def rms_norm_triton(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    """RMSNorm via the Triton kernel (fp32 math, output in x.dtype)."""
    return _RMSNorm.apply(x, weight, eps)


def swiglu_triton(gate: Tensor, up: Tensor) -> Tensor:
    """silu(gate) * up via the Triton kernel."""
    return _SwiGLU.apply(gate, up)


def apply_rope_triton(x: Tensor, positions: Tensor, inv_freq: Tensor, scale: float = 1.0) -> Tensor:
    """RoPE via the Triton kernel; see `llmforge.ops.apply_rope`."""
    return _RoPE.apply(x, positions, inv_freq, scale)
