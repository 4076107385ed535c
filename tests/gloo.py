"""Run a test function on CPU ranks over gloo and collect what each rank returns.

The ranks are forked (so the function may be a local closure) and meet through a file
store in the test's tmp_path; each rank's return value comes back through torch.save
and `torch.load(weights_only=True)`, so keep it to tensors, numbers, strings and lists.
"""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from llmforge import distributed


def on_ranks(world: int, fn, tmp_path, *args) -> list:
    """[fn(0, *args), ..., fn(world - 1, *args)], run in `world` processes of one gloo group."""
    out = str(tmp_path / f"rank-result-{world}")
    store = str(tmp_path / f"gloo-store-{world}")
    mp.start_processes(_rank, args=(world, fn, store, out, args), nprocs=world,
                       start_method="fork")  # fmt: skip
    return [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(world)]


def on_two_ranks(fn, tmp_path, *args) -> list:
    return on_ranks(2, fn, tmp_path, *args)


def _rank(rank: int, world: int, fn, store: str, out: str, args: tuple) -> None:
    distributed.init(init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.save(fn(rank, *args), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()
