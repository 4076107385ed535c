"""What the GPU benchmarks share: their --only, --dry and --json options, the CUDA check,
and the JSON lines they append for scripts/gpu-check.sh (OUTDIR/figures.jsonl)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def add_options(p: argparse.ArgumentParser, choices: Sequence[str], dry_help: str) -> None:
    """--dry and --json; --only when there are `choices` to pick from."""
    if choices:
        p.add_argument(
            "--only", default=",".join(choices), help=f"comma list of {', '.join(choices)}"
        )
    p.add_argument("--dry", action="store_true", help=dry_help)
    p.add_argument("--json", type=Path, help="append the results as JSON lines to this file")


def parse(p: argparse.ArgumentParser, argv, choices: Sequence[str]) -> argparse.Namespace:
    """Parse argv; `args.only` becomes a tuple of known choices (else a usage error)."""
    args = p.parse_args(argv)
    if not choices:
        return args
    args.only = tuple(x for x in args.only.split(",") if x)
    unknown = set(args.only) - set(choices)
    if unknown:
        p.error(f"--only: unknown {sorted(unknown)}; choose from {', '.join(choices)}")
    return args


def need_cuda(args: argparse.Namespace, name: str) -> None:
    """Exit with a clear line when there is no GPU and this is not a --dry run."""
    import torch

    if not args.dry and not torch.cuda.is_available():
        sys.exit(f"{name}: no CUDA device; run with --dry for the CPU check of its harness")


def append_json(path: Path | None, records: Sequence[dict]) -> None:
    if path is None:
        return
    with open(path, "a") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
