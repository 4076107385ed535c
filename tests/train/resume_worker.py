"""Workers for the multi-rank checkpoint tests (gloo on CPU).

`train_and_resume`: 8 steps with an asynchronous checkpoint at step 4, then a resume of a
copy of that checkpoint on the same ranks, trained to step 8 again. Rank 0 saves both
runs' weights (and the weights exported from the final checkpoint's shards), every rank
the rows it was given.

`peer_never_joins`: rank 1 stays away from a checkpoint; rank 0 must fail, not hang.
"""

import datetime
import os
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from llmforge.errors import RunFailed
from llmforge.model.parallelize import parallelize
from llmforge.train import checkpoint
from llmforge.train.loop import Loop
from tests.train.engine_helpers import checkpoint_loop

STEPS, BATCH = 8, 2


class RecordingLoader:
    """A loader that keeps the inputs of every micro-batch it hands out."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def next_batch(self):
        batch = self.inner.next_batch()
        self.seen.append(batch.inputs)
        return batch

    def __getattr__(self, name):
        return getattr(self.inner, name)


def build_loop(tokens: Path, work: Path, rank: int, world: int, accum: int = 1) -> Loop:
    """8 steps of batch 2 per rank, an asynchronous checkpoint at step 4, rows recorded."""
    loop = checkpoint_loop(tokens, work, STEPS, 4, rank=rank, world=world, accum=accum,
                           batch_size=BATCH, wrap=parallelize if world > 1 else None,
                           async_checkpoint=True, keep_checkpoints=5)  # fmt: skip
    loop.loader = RecordingLoader(loop.loader)
    return loop


def full_weights(model) -> dict:
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def _init(rank: int, world: int, port: int, timeout_s: float = 60) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    timeout = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timeout)


def train_and_resume(rank: int, world: int, port: int, tokens: str, root: str) -> None:
    _init(rank, world, port)
    root = Path(root)
    first = build_loop(Path(tokens), root / "first", rank, world)
    first.run()
    with torch.no_grad():  # validation: FSDP2 keeps the root unsharded after it
        first.model(first.loader.seen[-1])
    final = first.final_checkpoint()  # every rank: it saves one when the last is older
    exported = checkpoint.model_weights(final) if rank == 0 else None
    weights_first = full_weights(first.model)
    if rank == 0:
        shutil.copytree(root / "first" / "ckpt-00000004", root / "copy" / "ckpt-00000004")
    dist.barrier()
    second = build_loop(Path(tokens), root / "copy", rank, world)
    assert second.resume() and second.step == 4
    second.run()
    weights_second = full_weights(second.model)
    torch.save({"rows": first.loader.seen}, root / f"rows{rank}.pt")
    if rank == 0:
        result = {"first": weights_first, "second": weights_second, "exported": exported}
        torch.save(result, root / "weights.pt")
    dist.destroy_process_group()


def peer_never_joins(rank: int, world: int, port: int, tokens: str, root: str) -> None:
    _init(rank, world, port, timeout_s=3)
    loop = build_loop(Path(tokens), Path(root) / "work", rank, world)
    outcome_file = Path(root) / "outcome.pt"
    if rank == 1:  # alive, but never reaches the checkpoint
        deadline = time.time() + 30
        while not outcome_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        os._exit(0)
    started = time.perf_counter()
    try:
        loop.save_checkpoint()
        outcome = "saved"
    except RunFailed as e:
        outcome = str(e)
    elapsed = time.perf_counter() - started
    torch.save({"outcome": outcome, "seconds": elapsed}, outcome_file.with_suffix(".tmp"))
    os.replace(outcome_file.with_suffix(".tmp"), outcome_file)
    os._exit(0)  # the group is broken; skip its teardown
