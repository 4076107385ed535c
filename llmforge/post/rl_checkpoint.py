"""Resumable RL checkpoints in the run's work directory.

A checkpoint is a directory `ckpt-STEP/` holding the model (safetensors, shared tensors
handled), the optimizer and LR-schedule state, the RNG states, and `state.json` (step,
prompt-stream position and the loop's `extra` state, e.g. the async loop's batch count). It is written under a temporary name and renamed into place, so
a crash mid-write never leaves a checkpoint that looks complete. The newest two are kept.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

_PREFIX = "ckpt-"


def save(work: Path, step: int, model, optimizer, scheduler, position: int, keep: int = 2,
         extra: dict | None = None):  # fmt: skip
    """Write checkpoint `step` atomically and prune older ones."""
    final = Path(work) / f"{_PREFIX}{step:07d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        },
        tmp / "trainer.pt",
    )
    state = {"step": step, "position": position, "extra": extra or {},
             "python_rng": _jsonable(random.getstate())}  # fmt: skip
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in checkpoints(work)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoints(work: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    found = [
        p for p in Path(work).glob(f"{_PREFIX}*") if p.is_dir() and not p.name.endswith(".tmp")
    ]
    return sorted(p for p in found if (p / "state.json").is_file())


def load_latest(work: Path, model, optimizer, scheduler) -> dict | None:
    """Restore the newest checkpoint into the given objects; its state dict, or None."""
    found = checkpoints(work)
    if not found:
        return None
    ckpt = found[-1]
    load_model(model, str(ckpt / "model.safetensors"))
    trainer = torch.load(ckpt / "trainer.pt", weights_only=True)
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    torch.set_rng_state(trainer["torch_rng"])
    state = json.loads((ckpt / "state.json").read_text())
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    return state


def trim_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after `step` (they are logged again when the run resumes)."""
    if not Path(path).is_file():
        return
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    kept = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= step]
    Path(path).write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")


def _jsonable(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]
