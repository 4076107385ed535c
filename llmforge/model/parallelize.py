"""Model wrapping for training: FSDP2 sharding and torch.compile.

`parallelize()` shards each transformer block and then the root with FSDP2 (`fully_shard`)
when a process group with more than one rank is running, so the tied embedding/head stays
in the root group; it compiles with `Module.compile()`, which keeps parameter names (and so
checkpoints) unchanged. Context parallelism (`context` > 1) is switched on here too; expert
parallelism lives in expert_parallel.py (not wired into the engine yet). The process group,
device placement and collectives live in `llmforge.distributed`.
"""

from __future__ import annotations

from torch import nn

from llmforge import distributed


def parallelize(model: nn.Module, compile: bool = False, context: int = 1) -> nn.Module:
    """Shard `model` with FSDP2 when distributed, and compile it if asked; returns it in place.

    With `context` > 1, groups of that many consecutive ranks split each sequence
    (context_parallel.py) before FSDP2 shards the weights over all ranks.
    Expects the GPT layout: a `layers` ModuleList of blocks.
    """
    if context > 1:
        from llmforge.model.context_parallel import apply_context_parallel, context_group

        apply_context_parallel(model, context_group(context))
    if distributed.get_world_size() > 1:
        from torch.distributed.fsdp import fully_shard

        for block in model.layers:
            fully_shard(block)
        fully_shard(model)
    if compile:
        model.compile()
    return model
