"""Peak memory of the chunked linear cross-entropy vs naive logits-then-cross-entropy (CPU).

Each variant runs forward + backward in a fresh subprocess, so the process's high-water
mark (`ru_maxrss`) belongs to that variant alone. The child also reads its resident set
after building the inputs; "extra" is the peak above that, i.e. what the loss itself costs.
The children save loss and gradients; the parent prints their differences and a ratio table.

    python bench/kernels_memory.py                      # vocab 32k and 128k, 4096 x 1024
    python bench/kernels_memory.py --vocab 32768 --tokens 8192 --hidden 2048
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("naive", "chunked")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _child(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    from llmforge.ops import linear_cross_entropy

    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    hidden = (torch.randn(args.tokens, args.hidden, generator=g) * 0.5).requires_grad_()
    weight = (torch.randn(args.vocab, args.hidden, generator=g) * 0.02).requires_grad_()
    targets = torch.randint(0, args.vocab, (args.tokens,), generator=g)
    targets[:: args.ignore_every] = -100
    base = _rss_mb()
    start = time.perf_counter()
    if args.child == "naive":
        logits = hidden @ weight.t()
        loss = F.cross_entropy(logits, targets, ignore_index=-100)
    else:
        loss = linear_cross_entropy(hidden, weight, targets, chunk_size=args.chunk).loss
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save({"loss": loss.detach(), "gh": hidden.grad, "gw": weight.grad}, args.out)
    print(json.dumps({"peak_mb": peak, "base_mb": base, "seconds": seconds}))


def _run_variant(variant: str, vocab: int, args: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--vocab", str(vocab), "--out", str(out)]
    cmd += ["--tokens", str(args.tokens), "--hidden", str(args.hidden), "--chunk", str(args.chunk)]
    cmd += ["--ignore-every", str(args.ignore_every)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _diffs(a: Path, b: Path) -> dict:
    import torch

    x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return {k: (x[k].float() - y[k].float()).abs().max().item() for k in ("loss", "gh", "gw")}


def _compare(vocab: int, args: argparse.Namespace, tmp: Path) -> None:
    stats, files = {}, {}
    for variant in VARIANTS:
        files[variant] = tmp / f"{variant}-{vocab}.pt"
        stats[variant] = _run_variant(variant, vocab, args, files[variant])
        s = stats[variant]
        extra = s["peak_mb"] - s["base_mb"]
        print(f"{vocab:>7} {variant:>8} {s['peak_mb']:>10.0f} {extra:>9.0f} {s['seconds']:>7.1f}")
    naive, chunked = stats["naive"], stats["chunked"]
    peak_ratio = naive["peak_mb"] / chunked["peak_mb"]
    extra_ratio = (naive["peak_mb"] - naive["base_mb"]) / (chunked["peak_mb"] - chunked["base_mb"])
    d = _diffs(files["naive"], files["chunked"])
    print(
        f"{vocab:>7} {'ratio':>8} {peak_ratio:>9.2f}x {extra_ratio:>8.2f}x"
        f"   |dloss| {d['loss']:.1e}  max|dgrad_h| {d['gh']:.1e}  max|dgrad_w| {d['gw']:.1e}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, nargs="+", default=[32768, 131072])
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--chunk", type=int, default=2048, help="chunk_size of the chunked loss")
    p.add_argument("--ignore-every", type=int, default=7, help="every k-th target is ignored")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.vocab = args.vocab[0]
        return _child(args)
    print(f"tokens {args.tokens}, hidden {args.hidden}, fp32, chunk {args.chunk}, fwd+bwd")
    print(f"{'vocab':>7} {'variant':>8} {'peak MB':>10} {'extra MB':>9} {'time s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for vocab in args.vocab:
            _compare(vocab, args, Path(tmp))


if __name__ == "__main__":
    main()
