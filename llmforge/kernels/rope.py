"""Rotary position embedding in Triton, with per-token positions (packed documents).

One program per token rotates all heads. The angle `position * inv_freq` is computed in
the kernel, so no cos/sin table is built and packed documents restart at position 0
for free. The backward pass is the inverse rotation: the same kernel with sin negated.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _rope(
    X, POS, INV_FREQ, Y, H, HALF, scale, sign,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    tok = tl.program_id(0).to(tl.int64)
    heads = tl.arange(0, BLOCK_H)[:, None]
    cols = tl.arange(0, BLOCK_D)[None, :]
    mask = (heads < H) & (cols < HALF)
    pos = tl.load(POS + tok).to(tl.float32)
    freq = tl.load(INV_FREQ + cols, mask=cols < HALF, other=0.0).to(tl.float32)
    angle = pos * freq
    cos = tl.cos(angle) * scale
    sin = tl.sin(angle) * scale * sign
    base = tok * H * 2 * HALF + heads * 2 * HALF + cols
    x1 = tl.load(X + base, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(X + base + HALF, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + base, (x1 * cos - x2 * sin).to(Y.dtype.element_ty), mask=mask)
    tl.store(Y + base + HALF, (x2 * cos + x1 * sin).to(Y.dtype.element_ty), mask=mask)


def rope(x: Tensor, positions: Tensor, inv_freq: Tensor, scale: float, inverse: bool) -> Tensor:
    """Rotate x [B, S, H, D] by positions [B, S] * inv_freq [D/2]; inverse=True un-rotates."""
    b, s, h, d = x.shape
    x = x.contiguous()
    pos = positions.reshape(-1).contiguous()
    y = torch.empty_like(x)
    _rope[(b * s,)](
        x, pos, inv_freq.contiguous(), y, h, d // 2, float(scale), -1.0 if inverse else 1.0,
        BLOCK_H=triton.next_power_of_2(h), BLOCK_D=triton.next_power_of_2(d // 2),
    )  # fmt: skip
    return y
