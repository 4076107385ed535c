"""Asynchronous RLVR: the servers sample the next batches while the trainer trains.

A producer thread draws batches (rollouts, rewards, dynamic sampling: `draw_batch`) from
the vLLM servers and queues them; the trainer takes them in order. Each batch remembers
the version of the weights that sampled it (optimizer steps taken, the oldest over its
sampling rounds), and the trainer at step s trains on it with off-policy lag s - version.

- The lag is bounded by `rollout.max_off_policy_steps` = k: the producer holds k slots and
  starts a batch only when it has one, so it never runs more than k batches ahead of the
  trainer (prime-rl's async level); a batch that is still older than k steps when the
  trainer reaches it (sampled across a slow sync) is dropped, and its prompts are spent.
- The loss corrects the lag with the importance weight p_trainer / p_sampler per token from
  the log-probs the servers returned with each sample (IcePop masking or TIS, `loss.*`);
  the metrics log `off_policy_lag`, `stale_dropped` and `offpolicy_clipped_frac`.
- Weights go to the servers after every optimizer step (`sync_generator`), while the
  producer keeps sampling: the servers hold new requests during the reload.
- Resume: a checkpoint records the prompt position and batch count of the batches the
  trainer consumed; batches that were queued or in flight are sampled again, with the
  checkpoint's weights. A resumed run continues from the checkpoint, but it does not
  equal an uninterrupted one bit for bit: which weights sampled a batch depends on timing.
"""

from __future__ import annotations

import queue
import threading

from llmforge import log
from llmforge.errors import RunFailed
from llmforge.post.rl_loop import GRPOLoop, PromptStream, RolloutBatch

MAX_DROPS_IN_A_ROW = 8


class AsyncGRPOLoop(GRPOLoop):
    """`GRPOLoop` over a `ServerPool`, sampling up to `max_off_policy_steps` steps ahead."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lag_bound = self.cfg.rollout.max_off_policy_steps
        self.consumed = 0  # batches taken by the trainer (trained or dropped)
        self.position_done = self.stream.position
        self.dropped = 0
        self._queue: queue.Queue = queue.Queue()
        self._slots = threading.Semaphore(self.lag_bound)
        self._stop = threading.Event()
        self._producer: threading.Thread | None = None

    # ------------------------------------------------------------ producer

    def start_producer(self) -> None:
        """A fresh producer from the consumed position, with its own prompt stream, queue,
        slots and stop flag, so a straggler from an earlier run can never feed this one."""
        self.stream.position = self.position_done
        self._queue, self._stop = queue.Queue(), threading.Event()
        self._slots = threading.Semaphore(self.lag_bound)
        self._producer = threading.Thread(
            target=self._produce, args=(self._queue, self._slots, self._stop, self.consumed),
            name="rollouts", daemon=True,
        )  # fmt: skip
        self._producer.start()

    def _produce(self, out: queue.Queue, slots: threading.Semaphore, stop: threading.Event,
                 index: int) -> None:  # fmt: skip
        stream = PromptStream(self.stream.rows, self.stream.seed, self.position_done)
        try:
            while not stop.is_set():
                if not slots.acquire(timeout=0.2):
                    continue
                batch = self.draw_batch(index, lambda: self.generator.version, stream)
                if stop.is_set():
                    return
                out.put(batch)
                index += 1
        except BaseException as e:  # handed to the trainer, which raises it
            out.put(e)

    def stop_producer(self) -> None:
        """Stop sampling; a batch in flight finishes (its requests have deadlines) unseen."""
        self._stop.set()
        if self._producer is not None:
            self._producer.join(timeout=5.0)
        self._producer = None

    # ------------------------------------------------------------ trainer side

    def next_batch(self) -> RolloutBatch:
        """The oldest queued batch within the lag bound; older ones are dropped."""
        dropped = 0
        while True:
            item = self._queue.get()
            self._slots.release()
            if isinstance(item, BaseException):
                raise item
            self.consumed, self.position_done = item.index + 1, item.position
            lag = self.step - item.version
            if lag <= self.lag_bound:
                break
            dropped += 1
            if dropped > MAX_DROPS_IN_A_ROW:
                raise RunFailed(
                    f"{dropped} rollout batches in a row were more than {self.lag_bound} steps "
                    f"old (the servers serve weights {item.version}, the trainer is at step "
                    f"{self.step}): are the weight syncs reaching the servers?"
                )
            log.warn(
                f"dropped rollout batch {item.index}: {lag} steps old (bound {self.lag_bound})"
            )
        self.dropped += dropped
        item.stats.update(off_policy_lag=lag, stale_dropped=dropped, weights_version=item.version)
        return item

    def restore(self, extra: dict) -> None:
        self.consumed = extra.get("batches", self.step)
        self.position_done = self.stream.position

    def checkpoint_extra(self) -> dict:
        return {"batches": self.consumed}

    def checkpoint(self, position: int | None = None) -> None:
        super().checkpoint(self.position_done)

    def run(self, until=None, on_step=lambda m: None):
        self.start_producer()
        try:
            return super().run(until, on_step)
        finally:
            self.stop_producer()
