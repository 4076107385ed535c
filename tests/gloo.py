"""Run a test function on two CPU ranks over gloo and collect what each rank returns.

The ranks are forked (so the function may be a local closure) and meet through a file
store in the test's tmp_path; each rank's return value comes back through torch.save
and `torch.load(weights_only=True)`, so keep it to tensors, numbers, strings and lists.
"""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def on_two_ranks(fn, tmp_path, *args) -> list:
    """[fn(0, *args), fn(1, *args)], run in two processes of one gloo group."""
    out = str(tmp_path / "rank-result")
    store = str(tmp_path / "gloo-store")
    mp.start_processes(_rank, args=(fn, store, out, args), nprocs=2, start_method="fork")
    return [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]


def _rank(rank: int, fn, store: str, out: str, args: tuple) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        torch.save(fn(rank, *args), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()
