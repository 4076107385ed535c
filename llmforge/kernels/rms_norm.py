"""RMSNorm forward and backward in Triton: one program per row, fp32 math.

The backward pass gives each program a contiguous block of rows so the weight gradient
is summed in registers and written once per program, then reduced over programs in torch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from llmforge.kernels.launch import num_programs


@triton.jit
def _rms_norm_fwd(X, W, Y, RSTD, stride_x, stride_y, D, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < D
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / D + eps)
    tl.store(Y + row * stride_y + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + row, rstd)


@triton.jit
def _rms_norm_bwd(DY, X, W, RSTD, DX, DW_PART, stride, N, D, rows_per_prog, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)  # int64 row offsets: N * D may exceed 2**31
    cols = tl.arange(0, BLOCK)
    mask = cols < D
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    row_end = tl.minimum((pid + 1) * rows_per_prog, N)
    for row in range(pid * rows_per_prog, row_end):
        x = tl.load(X + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        g = dy * w
        dx = rstd * (g - x * (rstd * rstd * tl.sum(g * x, axis=0) / D))
        tl.store(DX + row * stride + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw += dy * x * rstd
    tl.store(DW_PART + pid * D + cols, dw, mask=mask)


def rms_norm_fwd(x: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """y = x * rsqrt(mean(x^2) + eps) * weight over the last dim; also returns rstd [N]."""
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    n, d = x2.shape
    y = torch.empty_like(x2)
    rstd = torch.empty(n, dtype=torch.float32, device=x.device)
    block = triton.next_power_of_2(d)
    _rms_norm_fwd[(n,)](x2, weight, y, rstd, x2.stride(0), y.stride(0), d, eps, BLOCK=block)
    return y.view(x.shape), rstd


def rms_norm_bwd(dy: Tensor, x: Tensor, weight: Tensor, rstd: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients (dx in x.dtype, dweight in weight.dtype) given the saved rstd."""
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    dy2 = dy.reshape(x2.shape).contiguous()
    n, d = x2.shape
    progs = num_programs(x.device, n)
    rows_per_prog = triton.cdiv(n, progs)
    dx = torch.empty_like(x2)
    dw_part = torch.empty(progs, d, dtype=torch.float32, device=x.device)
    block = triton.next_power_of_2(d)
    _rms_norm_bwd[(progs,)](
        dy2, x2, weight, rstd, dx, dw_part, x2.stride(0), n, d, rows_per_prog, BLOCK=block
    )
    return dx.view(x.shape), dw_part.sum(0).to(weight.dtype)
