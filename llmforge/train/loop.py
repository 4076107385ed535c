"""The pretrain loop: draw micro-batches, call `train_step`, run callbacks, checkpoint, resume.

The loop is shared by pretrain, midtrain and context-extend. It owns the step counter and
the objects a checkpoint holds (model, optimizers, schedulers, data position, callback
state); everything else is a callback.

Preemption (the Slurm path): SIGTERM or SIGUSR1 sets a flag; after the current step the
loop saves a checkpoint and raises `RunFailed("preempted ...")`, so the CLI exits 1 and
the partial run directory stays. Re-running the same command resumes from it.

Resuming on another number of ranks: the data position is global (loader.py) and the
checkpoint is resharded on load (checkpoint.py); `resume_plan` gives the checkpoint's batch
plan, whose rows per step the new ranks keep by their number of micro-batches (or the
engine refuses with the numbers where they cannot).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from torch import nn

from llmforge import distributed, log
from llmforge.data.batch_plan import BatchPlan
from llmforge.data.loader import PackedLoader, saved_plan
from llmforge.errors import RunFailed
from llmforge.train import checkpoint
from llmforge.train.callbacks import Callback, SpikeGuard
from llmforge.train.step import train_step

PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def resume_plan(work: Path, train_cfg) -> tuple[BatchPlan, int, int] | None:
    """(batch plan, step, world size) of the newest checkpoint in `work`; None without one.

    The plan fixes the global rows of every step, so a resume on another number of ranks
    sees the same rows. Checkpoints from before batch warmup hold only the global batch
    (format 1 not even that: the config's batch on the ranks that saved it)."""
    path = checkpoint.latest(work)
    if path is None:
        return None
    restored = checkpoint.read_state(path)
    state = restored.shared.get("loader", {})
    if "global_batch_rows" in state:
        plan = saved_plan(state, train_cfg.seq_len)
    else:
        rows = train_cfg.batch_size * train_cfg.grad_accum * restored.world_size
        plan = BatchPlan(rows, train_cfg.seq_len)
    return plan, restored.step, restored.world_size


class Loop:
    """Runs `total_steps` optimizer steps of `model` on `loader`'s batches."""

    def __init__(self, model: nn.Module, raw_model: nn.Module, optimizers: list, schedulers: list,
                 loader: PackedLoader, total_steps: int, train_cfg, work: Path,
                 callbacks: list[Callback], log_fn: Callable[[dict], None] = lambda r: None):  # fmt: skip
        self.model, self.raw_model = model, raw_model
        self.optimizers, self.schedulers, self.loader = optimizers, schedulers, loader
        self.total_steps, self.cfg, self.work = total_steps, train_cfg, Path(work)
        self.callbacks, self.log = callbacks, log_fn
        self.spike = next((c for c in callbacks if isinstance(c, SpikeGuard)), None)
        self.step, self.progress, self._preempted = 0, None, False
        self.batch_rows = 0  # global rows of the step just done (the batch plan's, at its data)
        self.writer = checkpoint.CheckpointWriter(
            work, keep=train_cfg.keep_checkpoints, asynchronous=train_cfg.async_checkpoint
        )
        self.rewind_requested = False  # set by the spike policy; acted on after the callbacks

    def tokens_trained(self) -> int:
        """Input tokens of the steps done, over all ranks."""
        return self.loader.plan.rows_before(self.step) * self.cfg.seq_len

    # ------------------------------------------------------------ checkpoints

    def shared_state(self) -> dict:
        """What a checkpoint keeps besides tensors: the same on every rank."""
        return {
            "loader": self.loader.state_dict(),
            "callbacks": {c.name: c.state_dict() for c in self.callbacks},
        }

    def save_checkpoint(self) -> None:
        self.writer.save(self.step, self.model, self.optimizers, self.schedulers,
                         self.shared_state())  # fmt: skip

    def resume(self) -> bool:
        """Continue from the newest complete checkpoint in the work directory, if there is one."""
        if distributed.get_rank() == 0:
            checkpoint.clean_stale(self.work)
        distributed.barrier()  # nobody lists checkpoints while rank 0 still cleans up
        path = checkpoint.latest(self.work)
        if path is None:
            return False
        restored = checkpoint.load(path, self.model, self.optimizers, self.schedulers)
        self.step = restored.step
        self._restore_position(restored)
        for c in self.callbacks:
            c.load_state_dict(restored.shared["callbacks"].get(c.name, {}))
        log.info(f"resumed from {path.name} (step {self.step})")
        return True

    def _restore_position(self, restored: checkpoint.Restored) -> None:
        state = restored.shared["loader"]
        if state.get("format") == 2:
            self.loader.load_state_dict(state)
            return
        # format 1 kept one stream per rank; only the amount of data seen carries over
        rows = state["micro_batches"] * self.loader.batch_size * restored.world_size
        log.warn(
            f"checkpoint from an older llmforge: per-rank data streams; continuing the "
            f"global stream after {rows} rows (same amount of data, not the same documents)"
        )
        self.loader.skip_rows(rows)

    def rewind(self) -> None:
        """Reload the last checkpoint's weights and optimizer, keeping the data position."""
        self.writer.wait()
        path = checkpoint.latest(self.work)
        if path is None:
            log.warn("no checkpoint to rewind to yet; the spiking batch was skipped instead")
            return
        self.step = checkpoint.load(path, self.model, self.optimizers, self.schedulers).step
        log.info(f"rewound to {path.name} (step {self.step}); data continues past the spike")

    def final_checkpoint(self) -> Path:
        """The checkpoint of the finished run, saved now unless the newest one is at this step."""
        self.writer.wait()
        path = checkpoint.latest(self.work)
        if path is None or checkpoint.read_state(path).step != self.step:
            self.save_checkpoint()
            self.writer.wait()
            path = checkpoint.latest(self.work)
        return path

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
            self.writer.wait()  # a save in flight completes (or fails) before we return
        except BaseException:
            self._drain_writer()
            raise
        finally:
            self.progress = None
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _drain_writer(self) -> None:
        """On the way out of a failed run: let a save in flight finish, without masking why."""
        try:
            self.writer.wait()
        except Exception as e:  # the original error is the one to report
            log.warn(f"the checkpoint being written failed too: {e}")

    def _run(self) -> None:
        for c in self.callbacks:
            c.on_start(self)
        while self.step < self.total_steps:
            started = time.perf_counter()
            self.batch_rows = self.loader.plan.rows_at(self.loader.data_step)
            batches = [self.loader.next_batch() for _ in range(self.loader.micro_batches())]
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
                self.writer.wait()
                raise RunFailed(
                    f"preempted at step {self.step}; checkpoint saved, re-run to resume"
                )
        for c in self.callbacks:
            c.on_end(self)

    def _stop_requested(self) -> bool:
        """Any rank's signal stops every rank (so all of them join the checkpoint)."""
        return distributed.any_rank(self._preempted)
