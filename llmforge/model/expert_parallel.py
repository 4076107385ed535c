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

In the engine (`parallel.expert: P`, `apply_expert_parallel`) the world is cut into groups
of P consecutive ranks; each group holds every expert once, and rank i of every group holds
the same experts (its *replicas*). FSDP2 shards everything else over all ranks and leaves
the experts alone (`ignored_params`), so after backward `reduce_expert_gradients` sums each
expert's gradient over its replicas and divides by the world size: the gradient of the mean
loss over all ranks, what FSDP gives the other parameters. `expert_grad_norm_sq` is the
experts' share of the squared global gradient norm (summed over one group, where each
expert lives once). Unlike torchtitan, which also FSDP-shards the experts over the ranks
that replicate them, each expert stays whole on its replicas: expert memory is divided by
P, not by the world size.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from llmforge import distributed
from llmforge.model.gpt import GPT, MoE


class AllToAllDispatch:
    """`MoE.dispatch` for a rank owning experts first .. first + local - 1; `replicas` is
    the group of ranks that own the same experts (None when there is one expert group)."""

    def __init__(self, group: dist.ProcessGroup, first: int, local: int, replicas=None):
        self.group, self.first, self.local, self.replicas = group, first, local, replicas
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


def shard_experts(model: GPT, group: dist.ProcessGroup | None = None, replicas=None) -> None:
    """Keep only this rank's share of every MoE layer's experts; dispatch by all-to-all."""
    group = group or dist.group.WORLD
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    check_experts(model, world)
    for moe in model.moe_layers():
        local = moe.n_experts // world
        first = rank * local
        moe.experts = nn.ModuleDict({str(e): moe.experts[e] for e in range(first, first + local)})
        moe.dispatch = AllToAllDispatch(group, first, local, replicas)


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


def check_experts(model: GPT, ranks: int) -> None:
    """ValueError unless `model` has MoE layers whose experts split over `ranks` ranks."""
    experts = {moe.n_experts for moe in model.moe_layers()}
    if not experts:
        raise ValueError("expert parallelism needs an MoE model (model.moe.n_experts > 0)")
    if any(n % ranks for n in experts):
        raise ValueError(
            f"expert parallelism over {ranks} ranks needs model.moe.n_experts "
            f"({', '.join(map(str, sorted(experts)))}) to be a multiple of it"
        )


def expert_groups(ranks: int) -> tuple[dist.ProcessGroup, dist.ProcessGroup | None]:
    """(this rank's group of `ranks` consecutive ranks, the group of ranks that own the same
    experts: every `ranks`-th one; None when that is this rank alone). Every rank calls it."""
    world = dist.get_world_size()
    rank = dist.get_rank()
    if ranks == world:
        return dist.group.WORLD, None
    # new_group must be called by every rank for every group, in the same order
    groups = [dist.new_group(list(range(g, g + ranks))) for g in range(0, world, ranks)]
    replicas = [dist.new_group(list(range(i, world, ranks))) for i in range(ranks)]
    return groups[rank // ranks], replicas[rank % ranks]


def apply_expert_parallel(model: GPT, ranks: int) -> set[nn.Parameter]:
    """Shard `model`'s experts over groups of `ranks` ranks; returns the experts this rank
    keeps (for FSDP2 to leave alone)."""
    check_experts(model, ranks)
    group, replicas = expert_groups(ranks)
    shard_experts(model, group, replicas)
    return expert_parameters(model)


def _dispatches(model: nn.Module) -> list[tuple[MoE, AllToAllDispatch]]:
    return [(m, m.dispatch) for m in model.modules() if isinstance(m, MoE) and m.dispatch]


@torch.no_grad()
def reduce_expert_gradients(model: nn.Module) -> None:
    """Each owned expert's gradient: summed over its replicas, divided by the world size
    (the data-parallel mean FSDP gives the other parameters). A no-op without experts."""
    found = _dispatches(model)
    if not found:
        return
    grads = [p.grad for moe, _ in found for p in moe.experts.parameters() if p.grad is not None]
    replicas = found[0][1].replicas
    if replicas is not None:  # one all-reduce of all of them, not one per tensor
        flat = distributed.all_reduce(torch.cat([g.flatten() for g in grads]), group=replicas)
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))
    world = distributed.get_world_size()
    for g in grads:
        g.div_(world)


def expert_grad_norm_sq(model: nn.Module) -> Tensor | None:
    """Squared norm of every expert's gradient in the model (over this rank's group, which
    holds each expert once); None without expert parallelism."""
    found = _dispatches(model)
    if not found:
        return None
    grads = [p.grad for moe, _ in found for p in moe.experts.parameters() if p.grad is not None]
    local = torch.stack([g.float().pow(2).sum() for g in grads]).sum()
    return distributed.all_reduce(local, group=found[0][1].group)
