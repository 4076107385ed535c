"""Learning-rate schedules as pure functions of the step: warmup+cosine, WSD, multi-step;
and the batch-size warmup's plan.

`lr_factor(cfg, step, total)` is the multiplier of the peak lr at optimizer step `step`
(0-based). `build_schedulers` wraps it in `torch.optim.lr_scheduler.LambdaLR`, one per
optimizer, times `batch_lr_scale` (the square-root or linear rule for a global batch other
than the one the lr was tuned at) of that step's batch; since the factor depends only on
the step and the batch plan (which checkpoints keep), resuming needs no extra state.

`batch_plan(cfg, ...)` turns `schedule.batch_warmup` into a `BatchPlan` (data/batch_plan.py):
the global rows of every step, in whole micro-batches per rank.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

import torch

from llmforge.data.batch_plan import BatchPlan
from llmforge.errors import ConfigError
from llmforge.train.config import BatchWarmup, ScheduleConfig


def warmup_factor(step: int, warmup: int) -> float:
    """Linear warmup: (step + 1) / warmup, so the first step already trains."""
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def cosine_factor(cfg: ScheduleConfig, step: int, total: int) -> float:
    span = max(total - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def wsd_factor(cfg: ScheduleConfig, step: int, total: int) -> float:
    """Warmup, a stable plateau at 1, then a decay to min_lr_ratio over the last steps."""
    decay_steps = round(total * cfg.decay_fraction)
    decay_start = total - decay_steps
    if step < decay_start or decay_steps == 0:
        return 1.0
    progress = min((step - decay_start + 1) / decay_steps, 1.0)
    if cfg.decay_shape == "sqrt":
        remaining = 1 - math.sqrt(progress)
    elif cfg.decay_shape == "cosine":
        remaining = 0.5 * (1 + math.cos(math.pi * progress))
    else:
        remaining = 1 - progress
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * remaining


def multistep_factor(cfg: ScheduleConfig, step: int, total: int) -> float:
    """gamma ** (number of milestones passed); milestones are fractions of `total`."""
    bounds = [round(m * total) for m in cfg.milestones]
    return cfg.gamma ** bisect.bisect_right(bounds, step)


def lr_factor(cfg: ScheduleConfig, step: int, total: int) -> float:
    """The multiplier of the peak lr at 0-based optimizer step `step` of `total`."""
    shape = {
        "cosine": cosine_factor,
        "wsd": wsd_factor,
        "multistep": multistep_factor,
        "constant": lambda *_: 1.0,
    }[cfg.kind]
    return warmup_factor(step, cfg.warmup_steps) * shape(cfg, step, total)


def batch_lr_scale(cfg: ScheduleConfig, batch_tokens: int) -> float:
    """Peak-lr multiplier for a global batch of `batch_tokens` tokens per optimizer step.

    sqrt: (batch / reference) ** 0.5, the rule that keeps Adam's update noise constant
    (Malladi et al. 2022); linear: batch / reference (Goyal et al. 2017, for SGD).
    """
    if cfg.batch_scaling == "none":
        return 1.0
    if batch_tokens <= 0:
        raise ValueError(f"batch_scaling={cfg.batch_scaling} needs the global batch in tokens")
    ratio = batch_tokens / cfg.reference_batch
    return math.sqrt(ratio) if cfg.batch_scaling == "sqrt" else ratio


def build_schedulers(
    optimizers: list[torch.optim.Optimizer],
    cfg: ScheduleConfig,
    total: int,
    batch_tokens: int | Callable[[int], int] = 0,
) -> list[torch.optim.lr_scheduler.LambdaLR]:
    """One LambdaLR per optimizer; `batch_tokens` (the global batch, or a function of the
    step that gives it, during a batch-size warmup) feeds `batch_scaling`."""
    if callable(batch_tokens):
        tokens_at = batch_tokens
    else:
        tokens_at = lambda step: batch_tokens  # noqa: E731
    if cfg.batch_scaling == "none":
        scale = lambda step: 1.0  # noqa: E731
    else:
        scale = lambda step: batch_lr_scale(cfg, tokens_at(step))  # noqa: E731
    return [
        torch.optim.lr_scheduler.LambdaLR(opt, lambda s: scale(s) * lr_factor(cfg, s, total))
        for opt in optimizers
    ]


# ---------------------------------------------------------------- batch-size warmup

KEY = "schedule.batch_warmup"


def batch_plan(cfg: ScheduleConfig, batch_size: int, grad_accum: int, world: int,
               seq_len: int) -> BatchPlan:  # fmt: skip
    """The rows of every step: the full batch (`batch_size x grad_accum x world` rows), after
    the warmup's smaller batches in whole micro-batches per rank (1 .. grad_accum - 1)."""
    quantum = batch_size * world  # one micro-batch on every rank
    full = quantum * grad_accum
    warmup = cfg.batch_warmup
    if warmup.kind == "none":
        return BatchPlan(full, seq_len)
    if grad_accum == 1:
        raise ConfigError(
            f"{KEY}.kind", "the batch grows by micro-batches per rank, so train.grad_accum "
            "must be the full batch's count (> 1), with train.batch_size the micro-batch",
        )  # fmt: skip
    levels = _linear_levels if warmup.kind == "linear" else _step_levels
    phases = levels(warmup, quantum * seq_len, grad_accum)
    merged: list[tuple[int, int]] = []
    for steps, k in phases:
        if merged and merged[-1][1] == k * quantum:
            merged[-1] = (merged[-1][0] + steps, k * quantum)
        elif steps > 0:
            merged.append((steps, k * quantum))
    return BatchPlan(full, seq_len, tuple(merged))


def _micro_batches(tokens: float, pass_tokens: int, grad_accum: int, key: str) -> int:
    """Micro-batches per rank for a global batch of `tokens`, rounded down (at least one)."""
    if tokens >= pass_tokens * grad_accum:
        raise ConfigError(key, f"{int(tokens)} tokens is not below the full batch "
                          f"({pass_tokens * grad_accum} tokens per step)")  # fmt: skip
    return max(1, int(tokens // pass_tokens))


def _linear_levels(w: BatchWarmup, pass_tokens: int, accum: int) -> list[tuple[int, int]]:
    """(steps, micro-batches) while the batch grows linearly in tokens trained, start -> full."""
    full = pass_tokens * accum
    first = _micro_batches(w.start, pass_tokens, accum, f"{KEY}.start")
    trained, phases = 0, []
    for k in range(first, accum):
        # tokens trained when the ramp reaches k + 1 micro-batches
        reach = w.tokens * ((k + 1) * pass_tokens - w.start) / (full - w.start)
        steps = max(0, math.ceil((reach - trained) / (k * pass_tokens)))
        phases.append((steps, k))
        trained += steps * k * pass_tokens
    return phases


def _step_levels(w: BatchWarmup, pass_tokens: int, accum: int) -> list[tuple[int, int]]:
    """(steps, micro-batches) for each [batch, until] of `steps`."""
    trained, phases = 0, []
    for i, (batch, until) in enumerate(w.steps):
        k = _micro_batches(batch, pass_tokens, accum, f"{KEY}.steps[{i}]")
        steps = max(0, math.ceil((until - trained) / (k * pass_tokens)))
        phases.append((steps, k))
        trained += steps * k * pass_tokens
    return phases
