"""The training step, readable top to bottom: forward, backward, accumulation, clipping, step.

Gradient reduction is FSDP2's (on the last micro-batch), plus the experts' under expert
parallelism; `clip_gradients` measures the norm over every rank (model/parallelize.py).

Everything else the loop does (checkpoints, validation, spike policy, metrics, MoE bias)
lives in callbacks.py; the only hook here is `guard`, which may veto the optimizer step
after the gradients are known (that is how a spiking batch is skipped).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from llmforge import distributed
from llmforge.data.loader import Batch
from llmforge.model.expert_parallel import reduce_expert_gradients
from llmforge.model.parallelize import clip_gradients


@dataclass
class StepResult:
    loss: float  # mean cross-entropy over the micro-batches (and ranks)
    grad_norm: float  # global gradient norm before clipping
    tokens: int  # target tokens trained on, this rank
    stepped: bool  # False when the guard vetoed the update
    moe_load: torch.Tensor | None = None
    lr: float | None = None  # the last optimizer's lr at this step (before the schedule moves)


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" is bf16 on GPUs and on CPUs with AVX-512; on AVX2-only CPUs torch emulates
    bf16 matmuls (measured 30-60x slower than fp32), so it is fp32 there."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    return "bf16" if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else "fp32"


def autocast(precision: str, device: torch.device):
    if resolve_precision(precision, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train_step(
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    schedulers: list,
    micro_batches: list[Batch],
    *,
    precision: str = "bf16",
    grad_clip: float = 1.0,
    z_loss: float = 0.0,
    guard: Callable[[float, float], bool] | None = None,
) -> StepResult:
    device = distributed.model_device(model)
    n = len(micro_batches)
    loss_sum = torch.zeros((), device=device)
    tokens, moe_load = 0, None
    for i, mb in enumerate(micro_batches):
        tokens += int((mb.targets != -100).sum())  # counted where the loader made it: no sync
        batch = distributed.to_device(mb, device)
        _sync_grads(model, last=i == n - 1)  # FSDP: reduce gradients on the last only
        with autocast(precision, device):
            out = model(batch.inputs, targets=batch.targets, doc_ids=batch.doc_ids, z_loss=z_loss)
        (out.loss / n).backward()
        loss_sum += out.ce.detach().float()
        if "moe_load" in out.aux:
            moe_load = out.aux["moe_load"] if moe_load is None else moe_load + out.aux["moe_load"]

    loss = distributed.all_reduce(loss_sum / n, op="avg")
    reduce_expert_gradients(model)  # expert parallelism: FSDP leaves the experts to us
    grad_norm = clip_gradients(model, grad_clip if grad_clip > 0 else float("inf"))

    stepped = guard is None or guard(float(loss), grad_norm)
    lr = optimizers[-1].param_groups[0]["lr"] if optimizers else None
    if stepped:
        for opt in optimizers:
            opt.step()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    for sched in schedulers:  # a skipped step still uses up its place in the schedule
        sched.step()
    return StepResult(float(loss), grad_norm, tokens, stepped, moe_load, lr)


def _sync_grads(model: nn.Module, last: bool) -> None:
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(last)
