"""Model wrapping for training: expert and context parallelism, FSDP2 sharding, compile;
and the gradient norm over all of it.

`parallelize()` shards each transformer block and then the root with FSDP2 (`fully_shard`)
when a process group with more than one rank is running, so the tied embedding/head stays
in the root group; it compiles with `Module.compile()`, which keeps parameter names (and so
checkpoints) unchanged. Context parallelism (`context` > 1, context_parallel.py) and expert
parallelism (`expert` > 1, expert_parallel.py) are switched on here too: the experts a rank
keeps are FSDP2's `ignored_params`, and `clip_gradients` adds their norm to the sharded
parameters'. The process group, device placement and collectives live in
`llmforge.distributed`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llmforge import distributed


def parallelize(model: nn.Module, compile: bool = False, context: int = 1, expert: int = 1
                ) -> nn.Module:  # fmt: skip
    """Shard `model` with FSDP2 when distributed, and compile it if asked; returns it in place.

    With `context` > 1, groups of that many consecutive ranks split each sequence
    (context_parallel.py) before FSDP2 shards the weights over all ranks; with `expert` > 1
    groups of that many ranks share out each MoE layer's experts, which FSDP2 then leaves
    whole. Expects the GPT layout: a `layers` ModuleList of blocks.
    """
    if context > 1:
        from llmforge.model.context_parallel import apply_context_parallel, context_group

        apply_context_parallel(model, context_group(context))
    experts: set[nn.Parameter] = set()
    if expert > 1:
        from llmforge.model.expert_parallel import apply_expert_parallel

        experts = apply_expert_parallel(model, expert)
    if distributed.get_world_size() > 1:
        from torch.distributed.fsdp import fully_shard

        for block in model.layers:
            fully_shard(block, ignored_params=experts or None)
        fully_shard(model, ignored_params=experts or None)
    if compile:
        model.compile()
    return model


@torch.no_grad()
def clip_gradients(model: nn.Module, max_norm: float) -> float:
    """Clip the gradient norm over every rank's parameters to `max_norm` (inf: measure only)
    and return the norm before clipping.

    Without expert parallelism this is `torch.nn.utils.clip_grad_norm_` (FSDP2's sharded
    gradients are DTensors, whose norm is already global). With it, the experts are plain
    tensors that differ per rank: their squared norm, summed over an expert group
    (`expert_grad_norm_sq`), joins the sharded parameters' before one scale for all.
    """
    from llmforge.model.expert_parallel import expert_grad_norm_sq, expert_parameters

    params = [p for p in model.parameters() if p.grad is not None]
    own = expert_parameters(model)
    if not own:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    shared = [p.grad for p in params if p not in own]
    norm = torch.nn.utils.get_total_norm(shared).float()
    if hasattr(norm, "full_tensor"):  # a DTensor: the norm over every rank's shard
        norm = norm.full_tensor()
    total = math.sqrt(float(norm) ** 2 + float(expert_grad_norm_sq(model)))
    scale = max_norm / (total + 1e-6)  # what clip_grad_norm_ does, on one global norm
    if scale < 1:
        for p in params:
            p.grad.mul_(scale)
    return total
