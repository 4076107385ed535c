"""Context parallelism: the ranks of a group split each sequence (DeepSpeed-Ulysses style).

`apply_context_parallel(model, group)` makes every forward of `model` on a full batch
[B, S] work on this rank's S / P tokens, with the result of the one-process forward:

- inputs, targets and RoPE positions are cut into P contiguous chunks; rank r keeps
  chunk r. Positions are computed on the whole row first, so they restart per document
  exactly as without parallelism;
- in every attention layer, an all-to-all turns [B, H, S/P, D] (all heads, part of the
  sequence) into [B, H/P, S, D] (part of the heads, the whole sequence), the layer's own
  attention runs with the whole row's causal, intra-document mask, and a second
  all-to-all turns the output back. KV heads are split the same way, or repeated when
  there are fewer of them than ranks (GQA with n_kv_heads < P);
- the loss: each rank's mean cross-entropy is weighted by its share of the row's
  targets, times P, so that averaging over the P ranks (what FSDP2 does to gradients,
  and train_step to the logged loss) gives the mean over the whole row. The value
  returned is that mean (one scalar all-reduce), the gradient this rank's part of it.

Ulysses rather than ring attention: after the all-to-all each rank holds whole rows, so
any attention kernel and any mask (documents, soft-capping) works unchanged; the price is
that P must divide the heads. Every rank of a group must be given the same batch: the
engine draws data per data-parallel rank (world / P of them).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from llmforge import distributed
from llmforge.model.attention import CausalMask, document_positions
from llmforge.model.gpt import GPT, Attention, ModelOutput


def check_heads(n_heads: int, n_kv_heads: int, ranks: int) -> None:
    if n_heads % ranks or (n_kv_heads % ranks and ranks % n_kv_heads):
        raise ValueError(
            f"context parallelism over {ranks} ranks needs n_heads ({n_heads}) to be a "
            f"multiple of it and n_kv_heads ({n_kv_heads}) a multiple or a divisor of it"
        )


class Ulysses:
    """`Attention.sequence_parallel`: heads <-> sequence all-to-all around `attend`."""

    def __init__(self, group: dist.ProcessGroup):
        self.group = group
        self.ranks, self.rank = dist.get_world_size(group), dist.get_rank(group)

    def __call__(self, attend, q: Tensor, k: Tensor, v: Tensor, mask: CausalMask) -> Tensor:
        if k.shape[1] < self.ranks:  # each rank needs the KV head of its query heads
            k = k.repeat_interleave(self.ranks // k.shape[1], dim=1)
            v = v.repeat_interleave(self.ranks // v.shape[1], dim=1)
        q, k, v = self.to_heads(q), self.to_heads(k), self.to_heads(v)
        y = attend(q, k, v, mask, first_head=self.rank * q.shape[1])
        return self.to_sequence(y)

    def to_heads(self, x: Tensor) -> Tensor:
        """[B, H, S/P, D] -> [B, H/P, S, D]: send head chunk j to rank j."""
        b, h, s, d = x.shape
        chunks = x.reshape(b, self.ranks, h // self.ranks, s, d).transpose(0, 1)
        got = distributed.all_to_all(chunks.contiguous().flatten(0, 1), self.group)
        got = got.view(self.ranks, b, h // self.ranks, s, d)  # [source = sequence chunk, ...]
        return got.permute(1, 2, 0, 3, 4).reshape(b, h // self.ranks, self.ranks * s, d)

    def to_sequence(self, y: Tensor) -> Tensor:
        """[B, H/P, S, D] -> [B, H, S/P, D]: send sequence chunk j to rank j."""
        b, h, s, d = y.shape
        chunks = y.reshape(b, h, self.ranks, s // self.ranks, d).permute(2, 0, 1, 3, 4)
        got = distributed.all_to_all(chunks.contiguous().flatten(0, 1), self.group)
        got = got.view(self.ranks, b, h, s // self.ranks, d)  # [source = head chunk, ...]
        return got.transpose(0, 1).reshape(b, self.ranks * h, s // self.ranks, d)


class SequenceSplit:
    """The model's forward pre- and post-hooks: shard the batch, then combine the loss."""

    def __init__(self, group: dist.ProcessGroup):
        self.group = group
        self.ranks, self.rank = dist.get_world_size(group), dist.get_rank(group)
        self.share: Tensor | None = None

    def before(self, model: GPT, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        ids = args[0] if args else kwargs.pop("input_ids")
        targets, doc_ids = kwargs.get("targets"), kwargs.pop("doc_ids", None)
        if targets is None:
            raise ValueError(
                "under context parallelism the model needs targets (it returns the loss)"
            )
        b, s = ids.shape
        if s % self.ranks:
            raise ValueError(f"sequence length {s} is not a multiple of the {self.ranks} ranks")
        positions = kwargs.get("positions")
        if positions is None:
            positions = (
                torch.arange(s, device=ids.device).expand(b, s)
                if doc_ids is None
                else document_positions(doc_ids)
            )
        part = slice(self.rank * s // self.ranks, (self.rank + 1) * s // self.ranks)
        counted = (targets != -100).sum().clamp(min=1)
        self.share = (targets[:, part] != -100).sum() * self.ranks / counted
        kwargs.update(
            targets=targets[:, part],
            positions=positions[:, part],
            mask=CausalMask(s, doc_ids, device=ids.device),
        )
        return (ids[:, part],), kwargs

    def after(self, model: GPT, args: tuple, kwargs: dict, out: ModelOutput) -> ModelOutput:
        parts = torch.stack([out.loss, out.ce, out.z if out.z is not None else out.ce * 0])
        mine = parts * self.share
        mean = distributed.all_reduce(mine.detach(), group=self.group) / self.ranks
        loss, ce, z = mine + (mean - mine).detach()  # the value of the mean, this rank's grad
        return out._replace(loss=loss, ce=ce, z=None if out.z is None else z)


def context_group(ranks: int) -> dist.ProcessGroup:
    """This rank's group of `ranks` consecutive ranks (every rank must call this)."""
    world = dist.get_world_size()
    if ranks == world:
        return dist.group.WORLD
    groups = [dist.new_group(list(range(g, g + ranks))) for g in range(0, world, ranks)]
    return groups[dist.get_rank() // ranks]


def apply_context_parallel(model: GPT, group: dist.ProcessGroup) -> None:
    """Split every sequence `model` sees over `group`; see the module docstring."""
    ranks = dist.get_world_size(group)
    check_heads(model.cfg.n_heads, model.cfg.n_kv_heads, ranks)
    ulysses, split = Ulysses(group), SequenceSplit(group)
    for module in model.modules():
        if isinstance(module, Attention):
            module.sequence_parallel = ulysses
    model.register_forward_pre_hook(split.before, with_kwargs=True)
    model.register_forward_hook(split.after, with_kwargs=True)
