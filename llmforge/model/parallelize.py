"""Distributed setup and model wrapping: process groups, FSDP2 and torch.compile.

Under torchrun (or `accelerate launch`, which sets the same variables) every rank calls
`init_distributed()`; the backend is NCCL on GPUs and gloo on CPUs. `parallelize()` shards
each transformer block and then the root with FSDP2 (`fully_shard`), so the tied
embedding/head stays in the root group; it compiles with `Module.compile()`, which keeps
parameter names (and so checkpoints) unchanged. Context parallelism (`context` > 1) is
switched on here too; expert parallelism lives in expert_parallel.py (not wired into the
engine yet).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def init_distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group when launched with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def parallelize(model: nn.Module, compile: bool = False, context: int = 1) -> nn.Module:
    """Shard `model` with FSDP2 when distributed, and compile it if asked; returns it in place.

    With `context` > 1, groups of that many consecutive ranks split each sequence
    (context_parallel.py) before FSDP2 shards the weights over all ranks.
    Expects the GPT layout: a `layers` ModuleList of blocks.
    """
    if context > 1:
        from llmforge.model.context_parallel import apply_context_parallel, context_group

        apply_context_parallel(model, context_group(context))
    if dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.fsdp import fully_shard

        for block in model.layers:
            fully_shard(block)
        fully_shard(model)
    if compile:
        model.compile()
    return model
