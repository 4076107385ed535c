"""How many global rows each optimizer step takes: the plan behind batch-size warmup.

A `BatchPlan` is a few phases of (steps, rows per step) followed by the full batch for the
rest of the run. It is fixed when a run starts (from `schedule.batch_warmup`, built in
train/schedule.py), saved with the data position in every checkpoint and taken from there
on resume, so every step covers the same global rows whatever the number of ranks that
resumes it. Rows per step are whole micro-batches on every rank: R rows on W data-parallel
ranks of `batch_size` B are R / (B x W) micro-batches per rank, so the memory a
micro-batch needs is the same during the warmup as at the full batch.

Token budgets (the data stages', `train.steps: 0`) are turned into steps through the plan
(`steps_for_tokens`), so a stage of N tokens lasts more steps while the batch is small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmforge.errors import BadInput


@dataclass(frozen=True)
class BatchPlan:
    """Global rows per optimizer step: `phases` of (steps, rows), then `full` rows forever."""

    full: int  # rows per step after the warmup (the config's global batch)
    seq_len: int = 1  # tokens per row, for token budgets
    phases: tuple[tuple[int, int], ...] = ()

    @property
    def warmup_steps(self) -> int:
        return sum(steps for steps, _ in self.phases)

    def rows_at(self, step: int) -> int:
        """Rows of 0-based optimizer step `step`."""
        for steps, rows in self.phases:
            if step < steps:
                return rows
            step -= steps
        return self.full

    def rows_before(self, step: int) -> int:
        """Rows of steps 0 .. step - 1 together."""
        total = 0
        for steps, rows in self.phases:
            done = min(step, steps)
            total, step = total + done * rows, step - done
        return total + step * self.full

    def steps_in(self, rows: int) -> int:
        """The whole steps that the first `rows` global rows make up."""
        steps = 0
        for n, size in self.phases:
            if rows < n * size:
                return steps + rows // size
            rows, steps = rows - n * size, steps + n
        return steps + rows // self.full

    def steps_for_tokens(self, start: int, tokens: int) -> int:
        """Steps from step `start` on that train at least `tokens` tokens (at least one)."""
        need = math.ceil(tokens / self.seq_len)
        target = self.rows_before(start) + need
        lo, hi = start + 1, start + max(1, need)  # every step has at least one row
        while lo < hi:  # rows_before grows with the step: bisect
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self.rows_before(mid) >= target else (mid + 1, hi)
        return lo - start

    def micro_batches(self, step: int, batch_size: int, world: int) -> int:
        """Micro-batches per rank at `step` on `world` data-parallel ranks."""
        rows = self.rows_at(step)
        if rows % (batch_size * world):
            self.check_ranks(batch_size, world, step)  # raises, with the ranks that fit
        return rows // (batch_size * world)

    def check_ranks(self, batch_size: int, world: int, from_step: int = 0) -> None:
        """BadInput unless every step from `from_step` on is whole micro-batches on `world`
        ranks of `batch_size` rows (a resume on another number of ranks)."""
        sizes = self.sizes_from(from_step)
        if all(rows % (batch_size * world) == 0 for rows in sizes):
            return
        top = min(sizes) // batch_size
        ok = [w for w in range(1, top + 1) if all(r % (batch_size * w) == 0 for r in sizes)]
        shown = ", ".join(map(str, sorted(set(sizes))))
        raise BadInput(
            f"cannot resume on {world} rank(s): the checkpoint's global batch is {shown} rows "
            f"per step, not a multiple of train.batch_size {batch_size} x {world} ranks = "
            f"{batch_size * world}; resume on {ok} ranks"
        )

    def sizes_from(self, step: int) -> list[int]:
        """The distinct rows per step from `step` on, in order."""
        sizes, start = [], 0
        for steps, rows in self.phases:
            if start + steps > step:
                sizes.append(rows)
            start += steps
        return [*sizes, self.full]

    def state_dict(self) -> dict:
        return {
            "full": self.full,
            "seq_len": self.seq_len,
            "phases": [list(p) for p in self.phases],
        }

    @classmethod
    def from_state(cls, state: dict) -> BatchPlan:
        phases = tuple((int(s), int(r)) for s, r in state["phases"])
        return cls(int(state["full"]), int(state["seq_len"]), phases)
