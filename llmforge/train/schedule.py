"""Learning-rate schedules as pure functions of the step: warmup+cosine, WSD, multi-step.

`lr_factor(cfg, step, total)` is the multiplier of the peak lr at optimizer step `step`
(0-based). `build_schedulers` wraps it in `torch.optim.lr_scheduler.LambdaLR`, one per
optimizer, times `batch_lr_scale` (the square-root or linear rule for a global batch other
than the one the lr was tuned at); since the factor depends only on the step and the
batch, resuming needs no extra state.
"""

from __future__ import annotations

import bisect
import math

import torch

from llmforge.train.config import ScheduleConfig


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
    optimizers: list[torch.optim.Optimizer], cfg: ScheduleConfig, total: int, batch_tokens: int = 0
) -> list[torch.optim.lr_scheduler.LambdaLR]:
    """One LambdaLR per optimizer; `batch_tokens` (the global batch) feeds `batch_scaling`."""
    scale = batch_lr_scale(cfg, batch_tokens)
    return [
        torch.optim.lr_scheduler.LambdaLR(opt, lambda step: scale * lr_factor(cfg, step, total))
        for opt in optimizers
    ]
