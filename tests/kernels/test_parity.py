"""Triton kernels (interpreted on CPU) against the pure-torch references, forward and backward.

Tolerances: fp32 outputs and gradients within 1e-5 abs / 1e-5 rel (observed ~1e-6);
bf16 within 2e-2 abs and rel, i.e. one or two bf16 ulps at these magnitudes, since both
paths compute in fp32 and round once. Sizes are odd so every mask is exercised.
"""

from __future__ import annotations

import pytest
import torch

from llmforge import ops
from llmforge.kernels import cross_entropy
from llmforge.ops import linear_ce, reference

DTYPES = [torch.float32, torch.bfloat16]


def _tol(dtype):
    return {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}


def _pair(*shapes, dtype, seed=0):
    """The same random leaf tensors twice: one set for Triton, one for the reference."""
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    return [x.clone().requires_grad_() for x in xs], [x.clone().requires_grad_() for x in xs]


def _check(fn, ref, inputs, ref_inputs, dtype, extra=()):
    y, y_ref = fn(*inputs, *extra), ref(*ref_inputs, *extra)
    assert y.dtype == y_ref.dtype == dtype
    torch.testing.assert_close(y, y_ref, **_tol(dtype))
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, inputs, dy)
    ref_grads = torch.autograd.grad(y_ref, ref_inputs, dy)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5, 10), (7, 33)])
def test_rms_norm(force_triton, dtype, shape):
    (x, w), (x2, w2) = _pair(shape, shape[-1:], dtype=dtype)
    _check(ops.rms_norm, reference.rms_norm_reference, (x, w), (x2, w2), dtype, extra=(1e-5,))


@pytest.mark.parametrize("dtype", DTYPES)
def test_swiglu(force_triton, dtype):
    (g, u), (g2, u2) = _pair((3, 5, 7), (3, 5, 7), dtype=dtype)
    _check(ops.swiglu, reference.swiglu_reference, (g, u), (g2, u2), dtype)


def test_swiglu_spans_several_blocks(force_triton):
    (g, u), (g2, u2) = _pair((2, 1100), (2, 1100), dtype=torch.float32)  # 2200 > BLOCK 1024
    _check(ops.swiglu, reference.swiglu_reference, (g, u), (g2, u2), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads, head_dim", [(3, 12), (2, 10)])
def test_rope_with_document_restarts(force_triton, dtype, heads, head_dim):
    (x,), (x2,) = _pair((2, 5, heads, head_dim), dtype=dtype)
    positions = torch.tensor([[0, 1, 2, 0, 1], [0, 1, 2, 3, 4]])
    inv_freq = 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    extra = (positions, inv_freq, 1.25)
    _check(ops.apply_rope, reference.apply_rope_reference, (x,), (x2,), dtype, extra=extra)


@pytest.mark.parametrize("softcap", [None, 2.5])
def test_ce_chunk_kernels_over_several_vocab_blocks(softcap):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 37, generator=g) * 3
    targets = torch.randint(0, 37, (5,), generator=g)
    a, b = torch.randn(5, generator=g), torch.randn(5, generator=g)
    lse, tgt = cross_entropy.ce_stats(logits, targets, softcap, 0.7, max_block=16)
    lse_ref, tgt_ref = linear_ce._torch_stats(logits, targets, softcap, 0.7)
    torch.testing.assert_close(lse, lse_ref, **_tol(torch.float32))
    torch.testing.assert_close(tgt, tgt_ref, **_tol(torch.float32))
    grad = cross_entropy.ce_grad_(
        logits.clone(), targets, lse_ref, a, b, softcap, 0.7, max_block=16
    )
    grad_ref = linear_ce._torch_grad_(logits.clone(), targets, lse_ref, a, b, softcap, 0.7)
    torch.testing.assert_close(grad, grad_ref, **_tol(torch.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "opts",
    [{"z_loss": 1e-2}, {"softcap": 3.0, "temperature": 0.8, "reduction": "sum"}],
)
@pytest.mark.parametrize("logprobs", [False, True])
def test_linear_cross_entropy_triton_path(force_triton, dtype, opts, logprobs):
    n, h_dim, v = 13, 8, 29
    (h, w), (h2, w2) = _pair((n, h_dim), (v, h_dim), dtype=dtype)
    targets = torch.randint(0, v, (n,), generator=torch.Generator().manual_seed(1))
    targets[::3] = -100
    out = ops.linear_cross_entropy(h, w, targets, chunk_size=5, return_logprobs=logprobs, **opts)
    loss, _, _, lp = ops.linear_cross_entropy_reference(h2, w2, targets, **opts)
    weights = torch.linspace(-1.0, 1.0, n)
    obj = out.loss + (out.logprobs * weights).sum() if logprobs else out.loss
    obj_ref = loss + (lp * weights).sum() if logprobs else loss
    tol = _tol(dtype)
    torch.testing.assert_close(out.loss, loss, **tol)
    grads = zip(
        torch.autograd.grad(obj, (h, w)), torch.autograd.grad(obj_ref, (h2, w2)), strict=True
    )
    for g, r in grads:
        torch.testing.assert_close(g, r, **tol)
