"""Training checkpoints: model, optimizers, LR schedules, data position and RNG, written atomically.

A checkpoint is a directory `ckpt-{step:08d}/` in the run's work directory:

    state.pt            model + optimizer + scheduler state and the torch RNG (torch.save;
                        read back with torch.load(weights_only=True), so no pickled code)
    rank{r}.json        each rank's data position and callback state (plain JSON)

It is written to `ckpt-{step}.tmp/` and renamed into place, so a directory without `.tmp`
is always complete; a run killed mid-write leaves only a `.tmp` that the next save
replaces. Model and optimizer states are gathered as full (unsharded) state dicts with
`torch.distributed.checkpoint.state_dict`, so the same file restores a plain model, an
FSDP2 model, or a run on a different number of ranks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from llmforge import distributed

PATTERN = re.compile(r"^ckpt-(\d{8})$")
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


_barrier = distributed.barrier
_rank = distributed.get_rank


def checkpoints(work: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in `work`, oldest first."""
    found = [
        (int(m.group(1)), p) for p in Path(work).glob("ckpt-*") if (m := PATTERN.match(p.name))
    ]
    return sorted(found)


def latest(work: Path) -> Path | None:
    found = checkpoints(work)
    return found[-1][1] if found else None


def save(work: Path, step: int, model: nn.Module, optimizers: list, schedulers: list,
         rank_state: dict, keep: int = 2) -> Path:  # fmt: skip
    """Write checkpoint `step` (every rank calls this; rank 0 writes the shared state)."""
    final = Path(work) / f"ckpt-{step:08d}"
    tmp = final.with_name(final.name + ".tmp")
    model_sd = get_model_state_dict(model, options=FULL)
    optim_sd = get_optimizer_state_dict(model, optimizers, options=FULL)
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    (tmp / f"rank{_rank()}.json").write_text(json.dumps(rank_state))
    if _rank() == 0:
        state = {
            "model": model_sd,
            "optim": optim_sd,
            "sched": [s.state_dict() for s in schedulers],
            "torch_rng": torch.get_rng_state(),
            "step": step,
        }
        torch.save(state, tmp / "state.pt")
    _barrier()
    if _rank() == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for _, old in checkpoints(work)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def load(path: Path, model: nn.Module, optimizers: list, schedulers: list) -> tuple[int, dict]:
    """Restore a checkpoint into model/optimizers/schedulers; returns (step, this rank's state)."""
    state = torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=True)
    set_model_state_dict(model, state["model"], options=FULL)
    set_optimizer_state_dict(model, optimizers, state["optim"], options=FULL)
    for sched, sd in zip(schedulers, state["sched"]):
        sched.load_state_dict(sd)
    torch.set_rng_state(state["torch_rng"])
    rank_file = Path(path) / f"rank{_rank()}.json"
    if not rank_file.is_file():
        raise FileNotFoundError(f"{rank_file}: checkpoint was written with fewer ranks")
    return int(state["step"]), json.loads(rank_file.read_text())
