"""Choosing what to train on: dynamic sampling, the offline difficulty filter, temperature.

- Dynamic sampling (DAPO): a group whose rewards all agree has zero advantage everywhere
  and teaches nothing; such groups are dropped and more prompts are drawn until the batch
  is full again (or the refill budget runs out).
- The difficulty filter runs once before training: k rollouts per prompt with the starting
  model, keep prompts whose pass rate lies in (low, high] (default (0, 0.8]), and report
  the pass-rate histogram before and after.
- Temperature may decay linearly over training (Kimi K2 lowers it as the policy sharpens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def informative(rewards: Sequence[float], tol: float = 1e-6) -> bool:
    """True when a group's rewards differ, so its advantages are not all zero."""
    return max(rewards) - min(rewards) > tol


def dynamic_sample(
    draw: Callable[[int], list],
    score: Callable[[list], list[list[float]]],
    batch_groups: int,
    max_rounds: int,
    enabled: bool = True,
) -> tuple[list, dict]:
    """Fill a batch with informative groups.

    `draw(n)` gives the next n prompts' rollout groups; `score(groups)` their rewards per
    group. Returns (kept items as (group, rewards) pairs, stats). With `enabled=False` one
    round is drawn and every group is kept.
    """
    kept, drawn, rounds = [], 0, 0
    while len(kept) < batch_groups and rounds < (max_rounds if enabled else 1):
        groups = draw(batch_groups - len(kept) if enabled else batch_groups)
        rewards = score(groups)
        drawn += len(groups)
        rounds += 1
        kept += [
            (g, r) for g, r in zip(groups, rewards, strict=True) if not enabled or informative(r)
        ]
    kept = kept[:batch_groups]
    return kept, {
        "groups_drawn": drawn,
        "groups_kept": len(kept),
        "sample_rounds": rounds,
        "kept_fraction": len(kept) / max(drawn, 1),
    }


def pass_rate_histogram(rates: Sequence[float], bins: int = 5) -> dict[str, int]:
    """Counts of pass rates: exactly 0, then (i/bins, (i+1)/bins] for each bin."""
    edges = [i / bins for i in range(bins + 1)]
    hist = {"0": sum(1 for r in rates if r <= 0)}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        hist[f"({lo:.1f},{hi:.1f}]"] = sum(1 for r in rates if lo < r <= hi)
    return hist


def difficulty_filter(rates: Sequence[float], low: float, high: float) -> list[int]:
    """Indices of prompts with low < pass rate <= high."""
    return [i for i, r in enumerate(rates) if low < r <= high]


def temperature_at(step: int, total: int, start: float, final: float | None) -> float:
    """Linear decay from `start` to `final` over `total` steps (constant if final is None)."""
    if final is None or total <= 1:
        return start
    frac = min(max(step / (total - 1), 0.0), 1.0)
    return start + (final - start) * frac
