"""Reasoning-style compatibility: how far each SFT source is from the student's own style.

A bigger teacher's traces can hurt a small student when their style is far from what the
student would write (the +11.9 vs -17.9 LiveCodeBench gap in the seed reports). Before
training we score a sample of each source with the student: the per-token NLL of the
assistant tokens, per row. A source whose mean NLL sits far above the others, measured in
standard deviations of the other sources' rows (a z-score), is flagged; it can be
reported, dropped or down-weighted.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from llmforge.config import check, param
from llmforge.distributed import model_device
from llmforge.post import chat_data


@dataclass(frozen=True)
class StyleArgs:
    """The style check before SFT."""

    enabled: bool = param(True, "score every source with the student before training")
    rows_per_source: int = param(64, "rows sampled per source for scoring")
    z_threshold: float = param(2.0, "flag a source whose mean NLL is this many std above the rest")
    min_gap: float = param(0.1, "and at least this many nats per token above the rest's mean")
    action: Literal["report", "drop", "downweight"] = param(
        "report", "what happens to a flagged source"
    )
    downweight: float = param(0.25, "weight multiplier for flagged sources when downweighting")

    def __post_init__(self):
        check(self.rows_per_source >= 2, "rows_per_source", "must be >= 2")
        check(self.z_threshold > 0, "z_threshold", "must be > 0")
        check(0 < self.downweight <= 1, "downweight", "must be in (0, 1]")


def row_nll(model, tokenizer, row: Mapping) -> float | None:
    """Mean NLL per assistant token of one chat row under `model` (None if it has none)."""
    import torch

    enc = chat_data.tokenize_chat(row, tokenizer, "assistant")
    ids = torch.tensor([enc["input_ids"]])
    mask = torch.tensor(enc["assistant_masks"][1:], dtype=torch.bool)
    if not mask.any():
        return None
    with torch.no_grad():
        logits = model(input_ids=ids.to(model_device(model)), use_cache=False).logits[0, :-1]
    targets = ids[0, 1:].to(logits.device)
    nll = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    return float(nll[mask.to(logits.device)].mean())


def score_sources(
    model, tokenizer, sources: Mapping[str, list[dict]], rows_per_source: int, seed: int = 0
) -> dict[str, list[float]]:
    """Per-row NLLs of a seeded sample of each source."""
    model.eval()
    rng = random.Random(seed)
    scores = {}
    for name, rows in sources.items():
        sample = rng.sample(rows, min(rows_per_source, len(rows)))
        values = [row_nll(model, tokenizer, r) for r in sample]
        scores[name] = [v for v in values if v is not None]
    return scores


def style_report(
    scores: Mapping[str, list[float]], z_threshold: float, min_gap: float = 0.0
) -> list[dict]:
    """One record per source, most mismatched first: mean and std of NLL, z vs the rest.

    A source is flagged when it is both unusual (z) and materially worse (gap in nats):
    an untrained student scores every source alike, with a tiny spread that would turn
    noise into large z-scores.
    """
    report = []
    for name, values in scores.items():
        rest = [v for other, vs in scores.items() if other != name for v in vs]
        mean = statistics.fmean(values) if values else float("nan")
        std = statistics.pstdev(values) if len(values) > 1 else 0.0
        z = _z_vs(mean, rest)
        gap = mean - statistics.fmean(rest) if rest else 0.0
        report.append(
            {
                "source": name,
                "rows": len(values),
                "nll_mean": round(mean, 4),
                "nll_std": round(std, 4),
                "z": round(z, 3),
                "gap": round(gap, 4),
                "flagged": bool(z >= z_threshold and gap >= min_gap),
            }
        )
    return sorted(report, key=lambda r: -r["z"])


def _z_vs(mean: float, rest: list[float]) -> float:
    if len(rest) < 2:
        return 0.0
    spread = statistics.pstdev(rest) or 1e-6
    return (mean - statistics.fmean(rest)) / spread


def adjust_weights(
    weights: Mapping[str, tuple[float, ...]], report: list[dict], args: StyleArgs
) -> dict[str, tuple[float, ...]]:
    """Mixture weights after the style check's action (report leaves them unchanged)."""
    flagged = {r["source"] for r in report if r["flagged"]}
    out = {}
    for name, ws in weights.items():
        if name in flagged and args.action == "drop":
            out[name] = tuple(0.0 for _ in ws)
        elif name in flagged and args.action == "downweight":
            out[name] = tuple(w * args.downweight for w in ws)
        else:
            out[name] = tuple(ws)
    return out


def print_table(report: list[dict]) -> None:
    """The style report as a rich table on stderr."""
    from rich.table import Table

    from llmforge import log

    table = Table(title="reasoning-style check (student NLL per assistant token)")
    for col in ("source", "rows", "nll_mean", "nll_std", "z", "flagged"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for r in report:
        flag = "[red]yes[/]" if r["flagged"] else "no"
        table.add_row(
            r["source"],
            str(r["rows"]),
            f"{r['nll_mean']:.3f}",
            f"{r['nll_std']:.3f}",
            f"{r['z']:+.2f}",
            flag,
        )
    if not log.is_quiet():
        log.console.print(table)
