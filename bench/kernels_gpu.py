"""Time each llmforge kernel against torch eager, torch.compile and Liger-Kernel on CUDA.

Shapes are Llama-3-8B's (hidden 4096, MLP 14336, 32 query and 8 KV heads of 128, vocab
128256) at 2 x 4096 tokens, in bf16. Each implementation runs forward (under no_grad)
and forward+backward, timed with `triton.testing.do_bench` (median after warm-up); the
extra peak memory of forward+backward is read from the CUDA allocator. Each row also
gives the largest forward difference from torch eager, so a fast but wrong kernel shows.

- RoPE rotates q and k together (Liger's API); Liger gets the cos/sin tables built
  outside the timed region (a model builds them once per forward for all layers), ours
  computes the angles in the kernel.
- linear CE: eager and compile are logits-then-cross-entropy; its memory line is the
  target of issue 15 (fused <= 0.5x of logits-then-CE at vocab 128k).
- Liger-Kernel is optional: without it the script says "liger-kernel not installed".

    python bench/kernels_gpu.py [--tokens 8192] [--only rms_norm,linear_ce] [--json F]
    python bench/kernels_gpu.py --dry     # tiny shapes on CPU (Triton interpreter): CI

The dry run checks the harness, not the speed: it compiles with the "eager" backend and
times with a wall clock.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if "--dry" in sys.argv:  # before triton is imported anywhere
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("LLMFORGE_FORCE_TRITON", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import gpu_harness  # noqa: E402

KERNELS = ("rms_norm", "swiglu", "rope", "linear_ce")


@dataclass(frozen=True)
class Shapes:
    tokens: int
    hidden: int
    mlp: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    seq: int


def real_shapes(tokens: int) -> Shapes:
    return Shapes(tokens, 4096, 14336, 32, 8, 128, 128256, min(tokens, 4096))


DRY = Shapes(16, 32, 64, 2, 1, 8, 256, 8)  # the interpreter runs ~1 ms per program


@dataclass
class Case:
    """One kernel: its inputs and the implementations to compare (name -> callable)."""

    kernel: str
    inputs: tuple
    impls: dict[str, Callable]


def _leaf(shape, device, dtype, scale=1.0):
    import torch

    return (torch.randn(*shape, device=device, dtype=dtype) * scale).requires_grad_()


def _liger(kernel: str):
    """Liger-Kernel's op for `kernel` with our call signature, or None when not importable."""
    try:
        if kernel == "rms_norm":
            from liger_kernel.ops.rms_norm import LigerRMSNormFunction

            return lambda x, w: LigerRMSNormFunction.apply(x, w, 1e-6)
        if kernel == "swiglu":
            from liger_kernel.ops.swiglu import LigerSiLUMulFunction

            return lambda g, u: LigerSiLUMulFunction.apply(g, u)
        if kernel == "rope":
            from liger_kernel.ops.rope import LigerRopeFunction

            def rope(q, k, cos, sin):  # Liger takes [B, H, S, D] views and rotates in place
                qo, ko = LigerRopeFunction.apply(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
                return qo.transpose(1, 2), ko.transpose(1, 2)

            return rope
        if kernel == "linear_ce":
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

            loss = LigerFusedLinearCrossEntropyLoss()
            return lambda h, w, t: loss(w, h, t)
    except ImportError:
        return None
    raise ValueError(kernel)


def build_cases(s: Shapes, device: str, only: tuple[str, ...], compile_backend: str) -> list[Case]:
    import torch

    from llmforge import ops
    from llmforge.ops.reference import rope_cos_sin

    bf16 = torch.bfloat16
    batch = max(1, s.tokens // s.seq)
    inv_freq = 1.0 / 500000.0 ** (
        torch.arange(0, s.head_dim, 2, device=device).float() / s.head_dim
    )
    # packed documents of seq / 4 tokens: positions restart four times per row
    pos = torch.arange(s.seq, device=device).repeat(batch, 1) % max(1, s.seq // 4)
    cos, sin = (t.squeeze(2).to(bf16) for t in rope_cos_sin(pos, inv_freq))
    targets = torch.randint(0, s.vocab, (batch * s.seq,), device=device)
    targets[::7] = -100
    n = batch * s.seq

    def rope_pair(fn):
        return lambda q, k, *_: (fn(q, pos, inv_freq), fn(k, pos, inv_freq))

    table = {
        "rms_norm": (
            (_leaf((n, s.hidden), device, bf16), _leaf((s.hidden,), device, bf16)),
            ops.rms_norm, ops.rms_norm_reference,
        ),
        "swiglu": (
            (_leaf((n, s.mlp), device, bf16), _leaf((n, s.mlp), device, bf16)),
            ops.swiglu, ops.swiglu_reference,
        ),
        "rope": (
            (_leaf((batch, s.seq, s.heads, s.head_dim), device, bf16),
             _leaf((batch, s.seq, s.kv_heads, s.head_dim), device, bf16), cos, sin),
            rope_pair(ops.apply_rope), rope_pair(ops.apply_rope_reference),
        ),
        "linear_ce": (
            (_leaf((n, s.hidden), device, bf16), _leaf((s.vocab, s.hidden), device, bf16, 0.02),
             targets),
            lambda h, w, t: ops.linear_cross_entropy(h, w, t).loss,
            lambda h, w, t: ops.linear_cross_entropy_reference(h, w, t)[0],
        ),
    }  # fmt: skip
    cases = []
    for kernel in only:
        inputs, ours, eager = table[kernel]
        impls = {"torch eager": eager}
        impls["torch.compile"] = torch.compile(eager, backend=compile_backend, dynamic=False)
        liger = _liger(kernel) if device == "cuda" else None
        if liger is not None:
            impls["liger"] = liger
        impls["llmforge"] = ours
        cases.append(Case(kernel, inputs, impls))
    return cases


def _outputs(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


def fwd_bwd(fn: Callable, inputs: tuple) -> Callable[[], None]:
    import torch

    leaves = [t for t in inputs if getattr(t, "requires_grad", False)]

    def run():
        outs = _outputs(fn(*inputs))
        total = sum(o.float().sum() for o in outs)
        torch.autograd.grad(total, leaves)

    return run


def forward(fn: Callable, inputs: tuple) -> Callable[[], None]:
    import torch

    def run():
        with torch.no_grad():
            fn(*inputs)

    return run


def timer(device: str) -> Callable[[Callable[[], None]], float]:
    """Milliseconds per call: `do_bench` (median) on CUDA, a wall clock elsewhere."""
    if device == "cuda":
        from triton.testing import do_bench

        return lambda fn: do_bench(fn, warmup=5, rep=25, return_mode="median")

    def wall(fn):  # the dry run: one warm-up, one timed call
        fn()
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    return wall


def extra_peak_gib(run: Callable[[], None], device: str) -> float | None:
    """Peak memory above what was allocated before one call of `run` (CUDA only)."""
    if device != "cuda":
        return None
    import torch

    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def max_diff(fn: Callable, ref: Callable, inputs: tuple) -> float:
    """Largest forward difference from the reference, on fresh copies (Liger works in place)."""
    import torch

    def fresh():
        return tuple(t.detach().clone() if torch.is_tensor(t) else t for t in inputs)

    with torch.no_grad():
        got, want = _outputs(fn(*fresh())), _outputs(ref(*fresh()))
    return max(float((g.float() - w.float()).abs().max()) for g, w in zip(got, want, strict=True))


def measure(case: Case, device: str):
    """One result row per implementation of `case`, yielded as each is measured."""
    time_ms = timer(device)
    eager = case.impls["torch eager"]
    for name, fn in case.impls.items():
        both = fwd_bwd(fn, case.inputs)
        yield {
            "kernel": case.kernel,
            "impl": name,
            "fwd_ms": time_ms(forward(fn, case.inputs)),
            "fwd_bwd_ms": time_ms(both),
            "peak_gib": extra_peak_gib(both, device),
            "max_diff": max_diff(fn, eager, case.inputs),
        }


def ratios(rows: list[dict]) -> dict[str, dict]:
    """Per kernel: eager / llmforge and liger / llmforge time (>1: ours faster), memory ratio."""
    out: dict[str, dict] = {}
    for kernel in dict.fromkeys(r["kernel"] for r in rows):
        by = {r["impl"]: r for r in rows if r["kernel"] == kernel}
        ours = by["llmforge"]
        entry = {
            f"{impl}_over_ours": by[impl]["fwd_bwd_ms"] / ours["fwd_bwd_ms"]
            for impl in ("torch eager", "torch.compile", "liger")
            if impl in by
        }
        if ours["peak_gib"] is not None and by["torch eager"]["peak_gib"]:
            entry["mem_ours_over_eager"] = ours["peak_gib"] / by["torch eager"]["peak_gib"]
        out[kernel] = entry
    return out


def liger_note(device: str) -> str | None:
    """Why there are no Liger rows, or None when there are."""
    if device != "cuda":
        return "liger: skipped in the CPU dry run (Liger-Kernel needs CUDA)"
    if _liger("rms_norm") is None:
        return "liger-kernel not installed: no Liger rows (scripts/gpu-wheels.sh ships it)"
    return None


HEADER = (f"{'kernel':>10} {'impl':>14} {'fwd ms':>9} {'fwd+bwd ms':>11} {'peak GiB':>9} "
          f"{'max diff':>9}")  # fmt: skip


def print_row(r: dict) -> None:
    peak = "n/a" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
    print(f"{r['kernel']:>10} {r['impl']:>14} {r['fwd_ms']:9.3f} {r['fwd_bwd_ms']:11.3f} "
          f"{peak:>9} {r['max_diff']:9.2e}", flush=True)  # fmt: skip


def print_summary(summary: dict[str, dict], note: str | None) -> None:
    if note:
        print(note)
    print("fwd+bwd time of each baseline / llmforge's (> 1: llmforge is faster):")
    for kernel, entry in summary.items():
        parts = [f"{k.removesuffix('_over_ours')} {v:.2f}x" for k, v in entry.items()
                 if k.endswith("_over_ours")]  # fmt: skip
        print(f"  {kernel:>10}: " + ", ".join(parts))
    ce = summary.get("linear_ce", {})
    if "mem_ours_over_eager" in ce:
        verdict = "meets" if ce["mem_ours_over_eager"] <= 0.5 else "misses"
        print(f"linear CE peak memory, fused / logits-then-CE: {ce['mem_ours_over_eager']:.3f}x "
              f"({verdict} the 0.5x target)")  # fmt: skip


def figure(summary: dict[str, dict]) -> str:
    """One line for the gpu-check table: time vs Liger (or compile) and the CE memory ratio."""
    parts = []
    for kernel, entry in summary.items():
        base = "liger" if "liger_over_ours" in entry else "torch.compile"
        parts.append(f"{kernel} {entry[base + '_over_ours']:.2f}x {base.split('.')[-1]}")
    if "mem_ours_over_eager" in summary.get("linear_ce", {}):
        parts.append(f"CE mem {summary['linear_ce']['mem_ours_over_eager']:.2f}x")
    return "; ".join(parts)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=8192, help="tokens per call (rows of 4096)")
    gpu_harness.add_options(p, KERNELS, "tiny shapes on CPU to check the harness")
    args = gpu_harness.parse(p, argv, KERNELS)
    if args.tokens < 1:
        p.error("--tokens must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    gpu_harness.need_cuda(args, "kernels_gpu")
    import torch

    device, shapes = ("cpu", DRY) if args.dry else ("cuda", real_shapes(args.tokens))
    torch.manual_seed(0)
    name = "CPU (dry run)" if args.dry else torch.cuda.get_device_name()
    print(f"{name}, {shapes.tokens} tokens, hidden {shapes.hidden}, vocab {shapes.vocab}, bf16")
    cases = build_cases(shapes, device, args.only, "eager" if args.dry else "inductor")
    print(HEADER)
    rows = []
    for case in cases:  # rows print as they come: a run cut short keeps what it measured
        for row in measure(case, device):
            print_row(row)
            rows.append(row)
        print(f"FIGURE: (so far) {figure(ratios(rows))}", flush=True)
    summary = ratios(rows)
    print_summary(summary, liger_note(device))
    line = figure(summary)
    print(f"FIGURE: {line}")
    record = {"part": "kernels", "device": name, "rows": rows, "summary": summary}
    gpu_harness.append_json(args.json, [{**record, "figure": line}])


if __name__ == "__main__":
    main()
