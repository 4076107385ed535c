"""On a CUDA device: the default dispatch picks Triton and matches the references at
realistic (but test-sized) shapes. Skipped on machines without a GPU."""

from __future__ import annotations

import pytest
import torch

from llmforge import ops

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
BF16 = {"atol": 2e-2, "rtol": 2e-2}


def test_norm_swiglu_rope_match_reference_on_cuda():
    x = torch.randn(2, 256, 8, 128, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(128, device="cuda", dtype=torch.bfloat16)
    assert ops.use_triton(x, w)
    torch.testing.assert_close(ops.rms_norm(x, w), ops.rms_norm_reference(x, w), **BF16)
    torch.testing.assert_close(ops.swiglu(x, x), ops.swiglu_reference(x, x), **BF16)
    pos = torch.arange(256, device="cuda").repeat(2, 1) % 100
    inv = 1.0 / 10000 ** (torch.arange(0, 128, 2, device="cuda").float() / 128)
    torch.testing.assert_close(
        ops.apply_rope(x, pos, inv), ops.apply_rope_reference(x, pos, inv), **BF16
    )


def test_linear_cross_entropy_matches_reference_on_cuda():
    h = torch.randn(1024, 256, device="cuda", requires_grad=True)
    w = (torch.randn(32000, 256, device="cuda") * 0.05).requires_grad_()
    t = torch.randint(0, 32000, (1024,), device="cuda")
    t[::5] = -100
    out = ops.linear_cross_entropy(h, w, t, z_loss=1e-4, chunk_size=256)
    gh, gw = torch.autograd.grad(out.loss, (h, w))
    ref = ops.linear_cross_entropy_reference(h, w, t, z_loss=1e-4)[0]
    rh, rw = torch.autograd.grad(ref, (h, w))
    torch.testing.assert_close(out.loss, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gh, rh, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(gw, rw, atol=1e-4, rtol=1e-3)
