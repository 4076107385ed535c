"""Domain mixtures: reading `mixture` artifacts, checking weights, and multi-stage schedules.

A mixture is a map {domain: weight}. It comes from the config (per training stage) or from
a `mixture` artifact (`mixture.json` with `{"weights": {...}}`, written by regmix). A
training run is a list of `MixtureStage`s in the SmolLM3 style: each stage has a token
budget and its own mixture, and the best data goes last.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmforge.config import check, param
from llmforge.data.batch_plan import BatchPlan
from llmforge.errors import BadInput

MIXTURE_FILE = "mixture.json"
SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class MixtureStage:
    """One stage of a multi-stage data schedule."""

    name: str = param("main", "a label for logs and metrics")
    tokens: int = param(0, "token budget of this stage; 0 = until the end of training")
    weights: dict[str, float] = param(
        {}, "domain -> weight (must sum to 1); empty = the mixture input, else natural shares"
    )

    def __post_init__(self):
        check(self.tokens >= 0, "tokens", "must be >= 0")
        for domain, w in self.weights.items():
            check(w >= 0 and math.isfinite(w), f"weights.{domain}", "must be a finite number >= 0")
        if self.weights:
            total = sum(self.weights.values())
            check(abs(total - 1) <= SUM_TOLERANCE, "weights", f"must sum to 1, sum to {total:.4g}")


def read_mixture(path: str | Path) -> dict[str, float]:
    """The weights of a mixture artifact (a directory holding mixture.json) or a json file."""
    path = Path(path)
    file = path / MIXTURE_FILE if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise BadInput(f"no {MIXTURE_FILE}", path=str(path)) from None
    except UnicodeDecodeError as e:
        raise BadInput(f"not UTF-8 (byte {e.start})", path=str(file)) from None
    except json.JSONDecodeError as e:
        raise BadInput(f"invalid JSON: {e.msg}", path=str(file), line=e.lineno) from None
    weights = data.get("weights") if isinstance(data, dict) else None
    if not isinstance(weights, dict) or not weights:
        raise BadInput("expected a non-empty 'weights' map {domain: weight}", path=str(file))
    for domain, w in weights.items():
        if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0 or not math.isfinite(w):
            raise BadInput(f"weight of '{domain}' must be a number >= 0, got {w!r}", path=str(file))
    total = sum(weights.values())
    if abs(total - 1) > SUM_TOLERANCE:
        raise BadInput(f"weights must sum to 1, they sum to {total:.4g}", path=str(file))
    return {str(d): float(w) for d, w in weights.items()}


def weight_vector(
    weights: dict[str, float], domains: list[str], where: str = "mixture"
) -> np.ndarray:
    """Weights in the order of `domains`, normalised; unknown or all-zero domains are errors.

    Domains of the data that the mixture does not name get weight 0.
    """
    unknown = sorted(set(weights) - set(domains))
    if unknown:
        raise BadInput(f"{where}: unknown domain(s) {unknown}; the data has {domains}")
    vec = np.array([weights.get(d, 0.0) for d in domains], dtype=np.float64)
    if vec.sum() <= 0:
        raise BadInput(f"{where}: every domain has weight 0")
    return vec / vec.sum()


def natural_weights(domain_tokens: dict[str, int]) -> dict[str, float]:
    """Weights proportional to each domain's token count."""
    total = sum(domain_tokens.values())
    if total <= 0:
        raise BadInput("the tokens input holds no training tokens")
    return {d: n / total for d, n in domain_tokens.items()}


def stage_ends(stages: list[MixtureStage], batches: BatchPlan | int, total_steps: int) -> list[int]:
    """The optimizer step at which each stage ends (exclusive); the last ends at `total_steps`.

    A stage lasts the steps that train its token budget under `batches` (a `BatchPlan`, or
    tokens per step when every step is alike), so it takes more steps while a batch-size
    warmup keeps the batch small. A stage with `tokens == 0` runs until the end, so only
    the last stage may have it.
    """
    plan = batches if isinstance(batches, BatchPlan) else BatchPlan(batches)
    ends, step = [], 0
    for i, stage in enumerate(stages):
        last = i == len(stages) - 1
        if stage.tokens == 0 and not last:
            raise BadInput(
                f"data.stages[{i}] ('{stage.name}'): only the last stage may have tokens: 0"
            )
        step = total_steps if last else step + plan.steps_for_tokens(step, stage.tokens)
        ends.append(min(step, total_steps))
    return ends


def total_steps_for(stages: list[MixtureStage], batches: BatchPlan | int) -> int:
    """Steps needed to spend every stage's token budget (all budgets must be set)."""
    if any(s.tokens == 0 for s in stages):
        raise BadInput("train.steps is 0, so every data stage needs a token budget (tokens > 0)")
    plan = batches if isinstance(batches, BatchPlan) else BatchPlan(batches)
    step = 0
    for s in stages:
        step += plan.steps_for_tokens(step, s.tokens)
    return step
