"""Expert parallelism: each rank of a group owns n_experts / P experts of every MoE layer.

`shard_experts(model, group)` keeps rank r's experts r*E/P .. (r+1)*E/P - 1 (in a
ModuleDict keyed by their global number, so parameter names stay `experts.{e}.*` and a
gathered state dict loads into the one-process model) and sets `MoE.dispatch`:

1. every rank routes its own tokens (the router is replicated) and sorts the (token,
   expert) assignments by expert, which groups them by owning rank;
2. an all-to-all of the counts tells each rank how many rows it will receive, and an
   all-to-all of the hidden states sends them (uneven splits);
3. the owner runs each of its experts on its rows (every expert runs, even on none, so
   each parameter gets a gradient);
4. the reverse all-to-all brings the outputs home, where they are weighted and summed
   per token exactly as the one-process `MoE.run_experts` does.

The all-to-alls are differentiable, so backward sends the gradients the same way. An
expert's gradient then sums the contributions of every rank's loss; for the data-parallel
mean loss it must be divided by P, while replicated parameters are averaged over ranks:
`average_gradients` does both for a model trained without FSDP.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from llmforge import distributed
from llmforge.model.gpt import GPT, MoE


class AllToAllDispatch:
    """`MoE.dispatch` for a rank owning experts first .. first + local - 1."""

    def __init__(self, group: dist.ProcessGroup, first: int, local: int):
        self.group, self.first, self.local = group, first, local
        self.world = dist.get_world_size(group)

    def __call__(self, moe: MoE, flat: Tensor, chosen: Tensor, weights: Tensor) -> Tensor:
        order = torch.argsort(chosen.flatten(), stable=True)  # assignments by expert
        token = order // chosen.shape[1]
        counts = torch.bincount(chosen.flatten(), minlength=moe.n_experts)
        received = distributed.exchange_counts(counts, self.group).view(self.world, self.local)
        send_splits = counts.view(self.world, self.local).sum(1).tolist()
        recv_splits = received.sum(1).tolist()
        rows = distributed.all_to_all(flat[token], self.group, recv_splits, send_splits)
        out = self.run_local(moe, rows, received)
        back = distributed.all_to_all(out, self.group, send_splits, recv_splits)
        mixed = back * weights.flatten()[order, None].to(flat.dtype)
        return torch.zeros_like(flat).index_add(0, token, mixed)

    def run_local(self, moe: MoE, rows: Tensor, received: Tensor) -> Tensor:
        """Rows arrive by source rank, then by local expert; run each expert on its own."""
        experts = torch.arange(self.local, device=rows.device).repeat(self.world)
        expert_of_row = experts.repeat_interleave(received.flatten().to(rows.device))
        out = torch.zeros_like(rows)
        for i in range(self.local):
            idx = torch.where(expert_of_row == i)[0]
            out = out.index_copy(0, idx, moe.experts[str(self.first + i)](rows[idx]))
        return out


def shard_experts(model: GPT, group: dist.ProcessGroup | None = None) -> None:
    """Keep only this rank's share of every MoE layer's experts; dispatch by all-to-all."""
    group = group or dist.group.WORLD
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    for moe in model.moe_layers():
        if moe.n_experts % world:
            raise ValueError(
                f"expert parallelism over {world} ranks needs moe.n_experts ({moe.n_experts}) "
                "to be a multiple of it"
            )
        local = moe.n_experts // world
        first = rank * local
        moe.experts = nn.ModuleDict({str(e): moe.experts[e] for e in range(first, first + local)})
        moe.dispatch = AllToAllDispatch(group, first, local)


def expert_parameters(model: nn.Module) -> set[nn.Parameter]:
    """The parameters this rank owns alone (its experts)."""
    return {
        p
        for m in model.modules()
        if isinstance(m, MoE) and m.dispatch is not None
        for p in m.experts.parameters()
    }


def average_gradients(model: nn.Module, group: dist.ProcessGroup | None = None) -> None:
    """Data-parallel gradients without FSDP: mean of replicated ones over ranks, experts / P."""
    world = dist.get_world_size(group)
    own = expert_parameters(model)
    for p in model.parameters():
        if p.grad is None:
            continue
        if p not in own:
            p.grad.copy_(distributed.all_reduce(p.grad, group=group))
        p.grad.div_(world)


def gather_experts(model: GPT, group: dist.ProcessGroup | None = None) -> dict[str, Tensor]:
    """Every rank's expert weights by their global names (for export or a comparison)."""
    mine = {
        name: p.detach().cpu()
        for name, p in model.named_parameters()
        if p in expert_parameters(model)
    }
    return {k: v for part in distributed.all_gather_objects(mine, group) for k, v in part.items()}
