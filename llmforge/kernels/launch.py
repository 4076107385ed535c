"""Launch-size helpers shared by the kernels."""

from __future__ import annotations

import functools

import torch


@functools.cache
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_programs(device: torch.device, work_items: int) -> int:
    """Programs for a persistent-style launch: a few per SM on CUDA, few in the interpreter."""
    if device.type == "cuda":
        cap = 4 * _multiprocessors(device.index or 0)
    else:
        cap = 4  # TRITON_INTERPRET: every program costs ~1 ms, keep the grid small
    return max(1, min(cap, work_items))
