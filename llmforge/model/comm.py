"""The collectives of expert and context parallelism and MuonClip, in one small place.

Each moves its tensor onto the process group's device first (gloo takes CPU tensors,
NCCL CUDA ones), so a caller never hands a backend a tensor it cannot read. The
all-to-alls are the autograd-aware functional collectives: their backward is the reverse
all-to-all, which is what the dispatch of tokens to experts (and of heads to ranks)
needs. Checked on torch 2.13: gloo implements `all_to_all_single` with even and uneven
splits (and the list form `all_to_all`), so no send/recv fallback is needed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def group_device(group: dist.ProcessGroup | None = None) -> torch.device:
    """The device a group's collectives read: CUDA for NCCL, CPU for gloo."""
    if "nccl" in str(dist.get_backend(group)):  # also "cpu:gloo,cuda:nccl"
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def on_group_device(tensor: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    return tensor.to(group_device(group))


def all_to_all(
    tensor: Tensor,
    group: dist.ProcessGroup,
    output_splits: list[int] | None = None,
    input_splits: list[int] | None = None,
) -> Tensor:
    """Rows of `tensor` (split by `input_splits`, or evenly) to each rank; differentiable."""
    device = tensor.device
    out = funcol.all_to_all_single_autograd(
        on_group_device(tensor, group).contiguous(), output_splits, input_splits, group
    )
    return funcol.wait_tensor(out).to(device)


def exchange_counts(counts: Tensor, group: dist.ProcessGroup) -> Tensor:
    """Rank r's counts[j] reach rank j as its received[r] (no gradient)."""
    received = torch.empty_like(on_group_device(counts, group))
    dist.all_to_all_single(received, on_group_device(counts, group), group=group)
    return received.to(counts.device)


def all_reduce(tensor: Tensor, op=None, group: dist.ProcessGroup | None = None) -> Tensor:
    """In place over `group` (sum by default); a no-op outside torch.distributed."""
    if not is_distributed():
        return tensor
    moved = on_group_device(tensor, group)
    dist.all_reduce(moved, op=op or dist.ReduceOp.SUM, group=group)
    if moved is not tensor:
        tensor.copy_(moved)
    return tensor


def all_gather_objects(obj, group: dist.ProcessGroup | None = None) -> list:
    """Every rank's picklable `obj`, in rank order (small payloads only: state to compare)."""
    everyone = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, obj, group=group)
    return everyone
