"""Cross-entropy over one chunk of logits, in Triton, for the chunked linear CE.

Two kernels, one program per row, each streaming the row in blocks of the vocabulary:

- `ce_stats`: online logsumexp of the final logits and the target's final logit.
- `ce_grad_`: overwrites the raw logits with their gradient,
  `((a + b) * softmax - a * onehot) * d final / d raw`, recomputing tanh on the fly so
  soft-capping needs no extra buffer (the torch path needs one).

Final logits are `softcap * tanh(raw / softcap)` (when HAS_SOFTCAP) times `inv_temp`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

MAX_BLOCK = 4096


@triton.jit
def _tanh(x):
    # tanh from sigmoid: tl has no portable tanh that also runs under TRITON_INTERPRET.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _final(raw, softcap, inv_temp, HAS_SOFTCAP: tl.constexpr):
    if HAS_SOFTCAP:
        raw = softcap * _tanh(raw / softcap)
    return raw * inv_temp


@triton.jit
def _ce_stats(
    L, T, LSE, TGT, stride, V, softcap, inv_temp,
    HAS_SOFTCAP: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    base = L + row * stride
    m = tl.full([], float("-inf"), tl.float32)
    s = tl.zeros([], tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < V
        z = _final(
            tl.load(base + cols, mask=mask, other=0.0).to(tl.float32),
            softcap,
            inv_temp,
            HAS_SOFTCAP,
        )
        z = tl.where(mask, z, float("-inf"))
        m_new = tl.maximum(m, tl.max(z, axis=0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
        m = m_new
    tl.store(LSE + row, m + tl.log(s))
    t = tl.load(T + row)
    tl.store(TGT + row, _final(tl.load(base + t).to(tl.float32), softcap, inv_temp, HAS_SOFTCAP))


@triton.jit
def _ce_grad(
    L, T, LSE, A, B, stride, V, softcap, inv_temp,
    HAS_SOFTCAP: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    base = L + row * stride
    lse = tl.load(LSE + row)
    a = tl.load(A + row)
    b = tl.load(B + row)
    t = tl.load(T + row)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < V
        raw = tl.load(base + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_SOFTCAP:
            th = _tanh(raw / softcap)
            z = softcap * th * inv_temp
        else:
            z = raw * inv_temp
        p = tl.exp(z - lse)
        g = (a + b) * p - tl.where(cols == t, a, 0.0)
        g = g * inv_temp
        if HAS_SOFTCAP:
            g = g * (1.0 - th * th)
        tl.store(base + cols, g.to(L.dtype.element_ty), mask=mask)


def _launch_args(logits: Tensor, softcap: float | None, temperature: float, max_block: int | None):
    n, v = logits.shape
    block = min(triton.next_power_of_2(v), max_block or MAX_BLOCK)
    cap = 1.0 if softcap is None else float(softcap)
    return n, v, cap, 1.0 / temperature, dict(HAS_SOFTCAP=softcap is not None, BLOCK=block)


def ce_stats(
    logits: Tensor, targets: Tensor, softcap: float | None, temperature: float,
    max_block: int | None = None,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(logsumexp, target logit) of the final logits, per row, in fp32."""
    assert logits.stride(1) == 1, "logits rows must be contiguous"
    n, v, cap, inv_t, meta = _launch_args(logits, softcap, temperature, max_block)
    lse = torch.empty(n, dtype=torch.float32, device=logits.device)
    tgt = torch.empty_like(lse)
    _ce_stats[(n,)](logits, targets, lse, tgt, logits.stride(0), v, cap, inv_t, **meta)
    return lse, tgt


def ce_grad_(
    logits: Tensor, targets: Tensor, lse: Tensor, a: Tensor, b: Tensor,
    softcap: float | None, temperature: float, max_block: int | None = None,
) -> Tensor:  # fmt: skip
    """Overwrite raw logits [n, V] with the gradient of the objective; returns them."""
    assert logits.stride(1) == 1, "logits rows must be contiguous"
    n, v, cap, inv_t, meta = _launch_args(logits, softcap, temperature, max_block)
    a, b = a.float().contiguous(), b.float().contiguous()
    _ce_grad[(n,)](logits, targets, lse.contiguous(), a, b, logits.stride(0), v, cap, inv_t, **meta)
    return logits
