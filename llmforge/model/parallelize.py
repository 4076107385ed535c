"""Model wrapping for training: FSDP2 sharding and torch.compile.

`parallelize()` shards each transformer block and then the root with FSDP2 (`fully_shard`)
when a process group with more than one rank is running, so the tied embedding/head stays
in the root group; it compiles with `Module.compile()`, which keeps parameter names (and so
checkpoints) unchanged. The process group, device placement and collectives live in
`llmforge.distributed`.
"""

from __future__ import annotations

from torch import nn

from llmforge import distributed


def parallelize(model: nn.Module, compile: bool = False) -> nn.Module:
    """Shard `model` with FSDP2 when distributed, and compile it if asked; returns it in place.

    Expects the GPT layout: a `layers` ModuleList of blocks.
    """
    if distributed.get_world_size() > 1:
        from torch.distributed.fsdp import fully_shard

        for block in model.layers:
            fully_shard(block)
        fully_shard(model)
    if compile:
        model.compile()
    return model
