"""Fused ops the model and the losses call: Triton on CUDA, pure torch elsewhere.

`llmforge.ops.dispatch.use_triton` holds the rule. Callers never import `llmforge.kernels`
directly; these functions pick the implementation per call.
"""

from __future__ import annotations

from torch import Tensor

from llmforge.ops.dispatch import use_triton
from llmforge.ops.linear_ce import LinearCEOutput, linear_cross_entropy
from llmforge.ops.reference import (
    apply_rope_reference,
    linear_cross_entropy_reference,
    rms_norm_reference,
    swiglu_reference,
)

__all__ = [
    "LinearCEOutput",
    "apply_rope",
    "apply_rope_reference",
    "linear_cross_entropy",
    "linear_cross_entropy_reference",
    "rms_norm",
    "rms_norm_reference",
    "swiglu",
    "swiglu_reference",
    "use_triton",
]


def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    """RMSNorm over the last dim; computes in fp32 and returns x.dtype."""
    if use_triton(x, weight):
        from llmforge.ops.fused import rms_norm_triton

        return rms_norm_triton(x, weight, eps)
    return rms_norm_reference(x, weight, eps)


def swiglu(gate: Tensor, up: Tensor) -> Tensor:
    """silu(gate) * up."""
    if use_triton(gate, up):
        from llmforge.ops.fused import swiglu_triton

        return swiglu_triton(gate, up)
    return swiglu_reference(gate, up)


def apply_rope(x: Tensor, positions: Tensor, inv_freq: Tensor, scale: float = 1.0) -> Tensor:
    """Rotary embedding of x [B, S, H, D] at per-token positions [B, S] (rotate_half layout).

    Positions restart at 0 for each packed document. cos and sin are multiplied by
    `scale` (YaRN attention scaling).
    """
    if use_triton(x, positions, inv_freq):
        from llmforge.ops.fused import apply_rope_triton

        return apply_rope_triton(x, positions, inv_freq, scale)
    return apply_rope_reference(x, positions, inv_freq, scale)
