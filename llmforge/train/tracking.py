"""Optional experiment tracking: the metrics.jsonl records, also sent to W&B and TensorBoard.

metrics.jsonl stays the record. Setting `LLMFORGE_TRACK=wandb`, `tensorboard` or
`wandb,tensorboard` sends every record a training stage writes there (pretrain, midtrain
and context-extend through the engine's metrics sink, sft and dpo through the TRL
callback, rlvr through its loop) to the trackers as well, under the same names: nested
dicts are flattened with "/" (`val_loss_per_domain/code`), strings and lists are left out.

- A run is named `{stage}-{id[:12]}` like the default artifact path, plus the stage of a
  staged run (`-length4096` in context-extend), grouped by the artifact id, with the
  stage's resolved config as its config. Its W&B id is the artifact id, so a resumed run
  continues the same W&B run; every metric is plotted against `step`.
- wandb reads its own settings from the environment as always: `WANDB_PROJECT` (default
  "llmforge"), `WANDB_ENTITY`, `WANDB_DIR`, and `WANDB_MODE=offline` for no network.
- TensorBoard event files go to `ARTIFACT/tensorboard/` (so `tensorboard --logdir
  artifacts/` shows every run), or to `$LLMFORGE_TENSORBOARD_DIR/{run name}`. It needs
  the `tensorboard` package (torch.utils.tensorboard's writer).

Tracking lives in the environment, not in the stage config, so switching it on never
changes an artifact id. Only rank 0 tracks. Neither package is a dependency; asking for
one that is not installed is a usage error (exit 2) before training starts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from llmforge.errors import BadInput

ENV = "LLMFORGE_TRACK"
TENSORBOARD_DIR_ENV = "LLMFORGE_TENSORBOARD_DIR"
BACKENDS = ("wandb", "tensorboard")


def requested() -> list[str]:
    """The trackers `LLMFORGE_TRACK` names (comma separated; empty or 'none' = none)."""
    names = [n.strip().lower() for n in os.environ.get(ENV, "").split(",") if n.strip()]
    names = [n for n in names if n != "none"]
    for name in names:
        if name not in BACKENDS:
            raise BadInput(f"{ENV}={os.environ[ENV]!r}: unknown tracker {name!r} "
                           f"(choose from {', '.join(BACKENDS)})")  # fmt: skip
    return list(dict.fromkeys(names))


def scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """Numbers of a metrics record, nested dicts flattened as parent/child."""
    flat: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(scalars(value, prefix=f"{name}/"))
        elif isinstance(value, bool | int | float):
            flat[name] = float(value)
    return flat


class WandbRun:
    def __init__(self, run_id: str, name: str, group: str, stage: str, config: dict):
        wandb = _require("wandb", "pip install wandb")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "llmforge"), id=run_id, name=name,
            group=group, job_type=stage, config=config, resume="allow",
        )  # fmt: skip
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log(self, values: dict[str, float]) -> None:
        self.run.log(values)

    def close(self) -> None:
        self.run.finish()


class TensorBoardRun:
    def __init__(self, logdir: Path, config: dict):
        # torch's writer raises ImportError itself when the tensorboard package is missing
        tensorboard = _require("torch.utils.tensorboard", "pip install tensorboard")
        self.writer = tensorboard.SummaryWriter(log_dir=str(logdir))
        text = json.dumps(config, indent=2, default=str)
        self.writer.add_text("config", f"```\n{text}\n```")

    def log(self, values: dict[str, float]) -> None:
        step = int(values.get("step", 0))
        for key, value in values.items():
            if key != "step":
                self.writer.add_scalar(key, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


class Tracker:
    """The trackers of one training run; `log` takes metrics.jsonl records."""

    def __init__(self, runs: list):
        self.runs = runs

    def log(self, record: dict) -> None:
        values = scalars(record)
        if values:
            for run in self.runs:
                run.log(values)

    def close(self) -> None:
        for run in self.runs:
            run.close()


def open_tracker(out, suffix: str = "") -> Tracker | None:
    """Trackers for the artifact being written by `out` (a Run); None when none is asked."""
    names = requested()
    if not names or not out.is_main:
        return None
    name = f"{out.stage}-{out.id[:12]}" + (f"-{suffix}" if suffix else "")
    runs = []
    if "wandb" in names:
        run_id = out.id + (f"-{suffix}" if suffix else "")
        runs.append(WandbRun(run_id, name, out.id, out.stage, out.config))
    if "tensorboard" in names:
        root = os.environ.get(TENSORBOARD_DIR_ENV)
        logdir = Path(root) / name if root else out.dir / "tensorboard" / suffix
        runs.append(TensorBoardRun(logdir, out.config))
    return Tracker(runs)


@contextmanager
def tracked(out, suffix: str = "") -> Iterator[Callable[[dict], None]]:
    """A metrics sink: each record to metrics.jsonl, as always, and to the trackers."""
    tracker = open_tracker(out, suffix)

    def sink(record: dict) -> None:
        out.log_metrics(record)
        if tracker is not None:
            tracker.log(record)

    try:
        yield sink
    finally:
        if tracker is not None:
            tracker.close()


def _require(module: str, install: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise BadInput(f"{ENV} asks for {module}, which cannot be imported ({install})") from None
