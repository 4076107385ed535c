"""The pretrain loop: draw micro-batches, call `train_step`, run callbacks, checkpoint, resume.

The loop is shared by pretrain, midtrain and context-extend. It owns the step counter and
the objects a checkpoint holds (model, optimizers, schedulers, data position, callback
state); everything else is a callback.

Preemption (the Slurm path): SIGTERM or SIGUSR1 sets a flag; after the current step the
loop saves a checkpoint and raises `RunFailed("preempted ...")`, so the CLI exits 1 and
the partial run directory stays. Re-running the same command resumes from it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from torch import nn

from llmforge import distributed, log
from llmforge.data.loader import PackedLoader
from llmforge.errors import RunFailed
from llmforge.train import checkpoint
from llmforge.train.callbacks import Callback, SpikeGuard
from llmforge.train.step import train_step

PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Loop:
    """Runs `total_steps` optimizer steps of `model` on `loader`'s batches."""

    def __init__(self, model: nn.Module, raw_model: nn.Module, optimizers: list, schedulers: list,
                 loader: PackedLoader, total_steps: int, train_cfg, work: Path,
                 callbacks: list[Callback], log_fn: Callable[[dict], None] = lambda r: None,
                 data_world: int | None = None):  # fmt: skip
        self.model, self.raw_model = model, raw_model
        self.data_world = data_world  # ranks drawing distinct batches (None: the world size)
        self.optimizers, self.schedulers, self.loader = optimizers, schedulers, loader
        self.total_steps, self.cfg, self.work = total_steps, train_cfg, Path(work)
        self.callbacks, self.log = callbacks, log_fn
        self.spike = next((c for c in callbacks if isinstance(c, SpikeGuard)), None)
        self.step, self.progress, self._preempted = 0, None, False
        self.rewind_requested = False  # set by the spike policy; acted on after the callbacks

    def tokens_trained(self) -> int:
        """Input tokens per optimizer step times the steps done, over all ranks."""
        world = self.data_world or distributed.get_world_size()
        return self.step * self.cfg.batch_size * self.cfg.seq_len * self.cfg.grad_accum * world

    # ------------------------------------------------------------ checkpoints

    def rank_state(self) -> dict:
        return {
            "loader": self.loader.state_dict(),
            "callbacks": {c.name: c.state_dict() for c in self.callbacks},
        }

    def save_checkpoint(self) -> None:
        checkpoint.save(self.work, self.step, self.model, self.optimizers, self.schedulers,
                        self.rank_state(), keep=self.cfg.keep_checkpoints)  # fmt: skip

    def resume(self) -> bool:
        """Continue from the newest checkpoint in the work directory, if there is one."""
        path = checkpoint.latest(self.work)
        if path is None:
            return False
        self.step, state = checkpoint.load(path, self.model, self.optimizers, self.schedulers)
        self.loader.load_state_dict(state["loader"])
        for c in self.callbacks:
            c.load_state_dict(state["callbacks"].get(c.name, {}))
        log.info(f"resumed from {path.name} (step {self.step})")
        return True

    def rewind(self) -> None:
        """Reload the last checkpoint's weights and optimizer, keeping the data position."""
        path = checkpoint.latest(self.work)
        if path is None:
            log.warn("no checkpoint to rewind to yet; the spiking batch was skipped instead")
            return
        self.step, _ = checkpoint.load(path, self.model, self.optimizers, self.schedulers)
        log.info(f"rewound to {path.name} (step {self.step}); data continues past the spike")

    # ------------------------------------------------------------ the loop

    def _on_signal(self, signum, frame) -> None:
        self._preempted = True
        log.warn(f"signal {signum}: will checkpoint and stop after this step")

    def run(self) -> None:
        previous = {s: signal.signal(s, self._on_signal) for s in PREEMPT_SIGNALS}
        try:
            with log.progress("train", total=self.total_steps) as bar:
                bar.advance(self.step)
                self.progress = bar
                self._run()
        finally:
            self.progress = None
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _run(self) -> None:
        for c in self.callbacks:
            c.on_start(self)
        while self.step < self.total_steps:
            started = time.perf_counter()
            batches = [self.loader.next_batch() for _ in range(self.cfg.grad_accum)]
            data_wait = time.perf_counter() - started
            result = train_step(
                self.model, self.optimizers, self.schedulers, batches,
                precision=self.cfg.precision, grad_clip=self.cfg.grad_clip,
                z_loss=self.cfg.z_loss, guard=self.spike.guard if self.spike else None,
            )  # fmt: skip
            self.step += 1
            for c in self.callbacks:
                c.on_step(self, result, data_wait)
            if self.rewind_requested:
                self.rewind_requested = False
                self.rewind()
            if self._stop_requested():
                self.save_checkpoint()
                raise RunFailed(
                    f"preempted at step {self.step}; checkpoint saved, re-run to resume"
                )
        for c in self.callbacks:
            c.on_end(self)

    def _stop_requested(self) -> bool:
        """Any rank's signal stops every rank (so all of them join the checkpoint)."""
        return distributed.any_rank(self._preempted)
