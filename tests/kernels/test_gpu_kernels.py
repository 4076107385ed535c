"""The Triton kernels on a CUDA GPU at real shapes, forward and backward in bf16.

Shapes are Llama-3-8B's (hidden 4096, MLP 14336, 32 query / 8 KV heads of 128, vocab
128256) at 8192 tokens. Each kernel is checked against its pure-torch reference (which
computes in fp32 and rounds once, as the kernels do), so elementwise results may differ by
one bf16 rounding: 2e-2 abs and rel. The linear cross-entropy's gradients are tiny
(softmax / N), so they are compared relative to their own scale. Skipped without CUDA;
`scripts/gpu-check.sh` runs them (`pytest -m gpu`).
"""

from __future__ import annotations

import pytest
import torch

from llmforge import ops

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
BF16 = {"atol": 2e-2, "rtol": 2e-2}
TOKENS, HIDDEN, MLP, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 8192, 4096, 14336, 32, 8, 128, 128256
DEVICE = "cuda"


def _leaves(*shapes, scale=1.0, seed=0):
    """Two identical sets of bf16 CUDA leaf tensors: one for the kernel, one for the reference."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    xs = [torch.randn(s, device=DEVICE, generator=g) * scale for s in shapes]
    make = lambda: [x.to(torch.bfloat16).requires_grad_() for x in xs]
    return make(), make()


def _fwd_bwd(fn, inputs, extra=()):
    out = fn(*inputs, *extra)
    dy = torch.randn(out.shape, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(1))
    return out, torch.autograd.grad(out, inputs, dy.to(out.dtype))


def _check_elementwise(fn, ref, shapes, extra=()):
    ours, theirs = _leaves(*shapes)
    assert ops.use_triton(*ours)
    y, grads = _fwd_bwd(fn, ours, extra)
    y_ref, grads_ref = _fwd_bwd(ref, theirs, extra)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, y_ref, **BF16)
    for g, r in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, r, **BF16)


def test_rms_norm_bf16_hidden_4096():
    _check_elementwise(ops.rms_norm, ops.rms_norm_reference, [(TOKENS, HIDDEN), (HIDDEN,)])


def test_swiglu_bf16_mlp_14336():
    _check_elementwise(ops.swiglu, ops.swiglu_reference, [(TOKENS, MLP), (TOKENS, MLP)])


@pytest.mark.parametrize("heads", [HEADS, KV_HEADS])
def test_rope_bf16_packed_positions(heads):
    seq = min(TOKENS // 2, 4096)
    pos = torch.arange(seq, device=DEVICE).repeat(2, 1)
    pos[0] %= max(1, seq // 4)  # packed documents: positions restart every seq / 4 tokens in row 0
    inv = 1.0 / 500000.0 ** (torch.arange(0, HEAD_DIM, 2, device=DEVICE).float() / HEAD_DIM)
    _check_elementwise(
        ops.apply_rope, ops.apply_rope_reference, [(2, seq, heads, HEAD_DIM)], extra=(pos, inv)
    )


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().float(), want.detach().float()
    return float((got - want).norm() / want.norm())


def _extra_peak(fn) -> tuple[object, int]:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = fn()
    torch.cuda.synchronize()
    return result, torch.cuda.max_memory_allocated() - base


def test_linear_cross_entropy_bf16_vocab_128k():
    (h, w), (h2, w2) = _leaves((TOKENS, HIDDEN), (VOCAB, HIDDEN), seed=2)
    with torch.no_grad():
        w.mul_(0.02), w2.mul_(0.02)
    t = torch.randint(0, VOCAB, (TOKENS,), device=DEVICE)
    t[::5] = -100

    def fused():
        out = ops.linear_cross_entropy(h, w, t, z_loss=1e-4)
        return out.loss.detach(), torch.autograd.grad(out.loss, (h, w))

    def naive():
        loss = ops.linear_cross_entropy_reference(h2, w2, t, z_loss=1e-4)[0]
        return loss.detach(), torch.autograd.grad(loss, (h2, w2))

    (loss, grads), fused_peak = _extra_peak(fused)
    (ref, ref_grads), naive_peak = _extra_peak(naive)
    torch.testing.assert_close(loss, ref, atol=1e-3, rtol=1e-3)
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.dtype == r.dtype == torch.bfloat16
        assert _rel_err(g, r) < 1e-2
        assert float((g.float() - r.float()).abs().max()) <= 2e-2 * float(r.float().abs().max())
    # chunking must keep the [N, V] fp32 logits (4.2 GB here) out of memory
    assert fused_peak < naive_peak, (fused_peak / 2**30, naive_peak / 2**30)


def test_linear_cross_entropy_logprobs_grad_bf16():
    """The recompute mode (DPO, GRPO): per-token log-probs and their gradient."""
    n = 2048
    (h, w), (h2, w2) = _leaves((n, HIDDEN), (VOCAB, HIDDEN), seed=3)
    with torch.no_grad():
        w.mul_(0.02), w2.mul_(0.02)
    t = torch.randint(0, VOCAB, (n,), device=DEVICE)
    out = ops.linear_cross_entropy(h, w, t, temperature=0.8, return_logprobs=True)
    ref = ops.linear_cross_entropy_reference(h2, w2, t, temperature=0.8)[3]
    torch.testing.assert_close(out.logprobs, ref, atol=2e-3, rtol=2e-3)
    grads = torch.autograd.grad(out.logprobs.sum(), (h, w))
    ref_grads = torch.autograd.grad(ref.sum(), (h2, w2))
    for g, r in zip(grads, ref_grads, strict=True):
        assert _rel_err(g, r) < 1e-2
