"""Time each llmforge kernel against torch eager, torch.compile and Liger-Kernel on CUDA.

Shapes are Llama-3-8B's (hidden 4096, MLP 14336, 32 heads of 128, vocab 128256) at
2 x 4096 tokens, in bf16. Every implementation runs forward and forward+backward, timed
with `triton.testing.do_bench` (median of repeated runs after warm-up); the linear
cross-entropy also reports peak allocated memory. Speed-ups are against torch eager in
the same run. Liger-Kernel is optional: without it its rows say "n/a".

    python bench/kernels_gpu.py [--tokens 8192]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

HIDDEN, MLP, HEADS, HEAD_DIM, VOCAB = 4096, 14336, 32, 128, 128256


def _bench(fn: Callable[[], object]) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=10, rep=50)


def _fwd_bwd(fn, inputs):
    import torch

    def run():
        out = fn(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        torch.autograd.grad(out.float().sum(), [t for t in inputs if t.requires_grad])

    return run


def _liger(name: str):
    """The Liger-Kernel callable for `name` with our signature, or None when unavailable."""
    try:
        if name == "rms_norm":
            from liger_kernel.ops.rms_norm import LigerRMSNormFunction

            return lambda x, w: LigerRMSNormFunction.apply(x, w, 1e-6)
        if name == "swiglu":
            from liger_kernel.ops.swiglu import LigerSiLUMulFunction

            return LigerSiLUMulFunction.apply
        if name == "linear_ce":
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

            loss = LigerFusedLinearCrossEntropyLoss()
            return lambda h, w, t: loss(w, h, t)
    except ImportError:
        return None
    return None  # Liger's RoPE takes (q, k, cos, sin) tables in [B, H, S, D]: not one-to-one


def _cases(tokens: int):
    import torch

    from llmforge import ops

    dev, bf16 = "cuda", torch.bfloat16

    def leaf(*shape, dtype=bf16):
        return torch.randn(*shape, device=dev, dtype=dtype).requires_grad_()

    batch = max(1, tokens // 4096)
    seq = tokens // batch
    inv_freq = 1.0 / 500000.0 ** (torch.arange(0, HEAD_DIM, 2, device=dev).float() / HEAD_DIM)
    positions = torch.arange(seq, device=dev).repeat(batch, 1) % 1024  # packed 1k documents
    targets = torch.randint(0, VOCAB, (tokens,), device=dev)
    yield "rms_norm", ops.rms_norm, ops.rms_norm_reference, (leaf(tokens, HIDDEN), leaf(HIDDEN))
    yield "swiglu", ops.swiglu, ops.swiglu_reference, (leaf(tokens, MLP), leaf(tokens, MLP))
    rope_in = (leaf(batch, seq, HEADS, HEAD_DIM),)
    yield (
        "rope",
        lambda x: ops.apply_rope(x, positions, inv_freq),
        lambda x: ops.apply_rope_reference(x, positions, inv_freq),
        rope_in,
    )
    yield (
        "linear_ce",
        lambda h, w, t: ops.linear_cross_entropy(h, w, t).loss,
        lambda h, w, t: ops.linear_cross_entropy_reference(h, w, t)[0],
        (leaf(tokens, HIDDEN), (leaf(VOCAB, HIDDEN) * 0.02).detach().requires_grad_(), targets),
    )


def _row(kernel: str, impl: str, fn, inputs, eager_ms: float | None) -> float:
    import torch

    torch.cuda.reset_peak_memory_stats()
    fwd = _bench(lambda: fn(*inputs))
    both = _bench(_fwd_bwd(fn, inputs))
    peak_gb = torch.cuda.max_memory_allocated() / 2**30
    ratio = f"{eager_ms / both:5.2f}x" if eager_ms else "  1.00x"
    print(f"{kernel:>10} {impl:>14} {fwd:9.3f} {both:11.3f} {ratio:>8} {peak_gb:8.2f}")
    return both


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=8192)
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit(
            "kernels_gpu: no CUDA device; this benchmark needs a GPU (CPU memory: kernels_memory.py)"
        )
    print(f"{torch.cuda.get_device_name()}, {args.tokens} tokens, bf16; times in ms")
    print(f"{'kernel':>10} {'impl':>14} {'fwd':>9} {'fwd+bwd':>11} {'vs eager':>8} {'peak GB':>8}")
    for kernel, ours, reference, inputs in _cases(args.tokens):
        eager = _row(kernel, "torch eager", reference, inputs, None)
        _row(kernel, "torch.compile", torch.compile(reference), inputs, eager)
        liger = _liger(kernel)
        if liger is None:
            print(f"{kernel:>10} {'liger':>14} {'n/a':>9}")
        else:
            _row(kernel, "liger", liger, inputs, eager)
        _row(kernel, "llmforge", ours, inputs, eager)


if __name__ == "__main__":
    main()
