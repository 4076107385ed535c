"""The extras around the training step, one small callback each.

A callback sees the loop after every step (`on_step`) and at the end (`on_end`); those
whose state must survive a resume implement `state_dict`/`load_state_dict`. The loop
(loop.py) calls them in order; none of them touches another's state.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

import numpy as np
import torch

from llmforge import distributed, log
from llmforge.data.loader import Batch
from llmforge.errors import RunFailed
from llmforge.train.config import SpikeConfig
from llmforge.train.metrics import Meter
from llmforge.train.step import StepResult, autocast

if TYPE_CHECKING:
    from llmforge.train.loop import Loop


class Callback:
    name = "callback"

    def on_start(self, loop: Loop) -> None: ...

    def on_step(self, loop: Loop, result: StepResult, data_wait: float) -> None: ...

    def on_end(self, loop: Loop) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class SpikeGuard(Callback):
    """Flags a loss above `factor` x the running median, or a non-finite loss or grad norm.

    `guard` is handed to `train_step`: it vetoes the update of a spiking batch. With the
    "rewind" policy the loop then reloads the last checkpoint (keeping the data position,
    so the bad batches are not replayed); with "off" the event is only logged.
    """

    name = "spike"

    def __init__(self, cfg: SpikeConfig):
        self.cfg = cfg
        self.history: deque[float] = deque(maxlen=cfg.window)
        self.events = 0
        self.pending: dict | None = None

    def is_spike(self, loss: float, grad_norm: float) -> str | None:
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return "non-finite loss or gradient"
        if len(self.history) >= self.cfg.min_history:
            median = float(np.median(self.history))
            if loss > self.cfg.factor * median:
                return f"loss {loss:.4g} > {self.cfg.factor} x median {median:.4g}"
        return None

    def guard(self, loss: float, grad_norm: float) -> bool:
        reason = self.is_spike(loss, grad_norm)
        if reason is None:
            self.history.append(loss)
            return True
        self.events += 1
        self.pending = {"reason": reason, "loss": loss, "grad_norm": grad_norm}
        return self.cfg.policy == "off"

    def on_step(self, loop: Loop, result: StepResult, data_wait: float) -> None:
        if self.pending is None:
            return
        event, self.pending = {**self.pending, "policy": self.cfg.policy}, None
        log.warn(f"step {loop.step}: loss spike ({event['reason']}), policy {self.cfg.policy}")
        loop.log({"step": loop.step, "spike": event})
        if self.events > self.cfg.max_events:
            raise RunFailed(f"{self.events} loss spikes; giving up (spike.max_events)")
        if self.cfg.policy == "rewind":
            loop.rewind_requested = True

    def state_dict(self) -> dict:
        return {"history": list(self.history), "events": self.events}

    def load_state_dict(self, state: dict) -> None:
        self.history.extend(state["history"])
        self.events = state["events"]


class MetricsLogger(Callback):
    """Every `every` steps: loss, lr, grad norm, tokens, the step's global batch in tokens,
    tokens/s, MFU, data wait, domain shares."""

    name = "metrics"

    def __init__(self, every: int, flops_per_token: float, peak_flops: float):
        self.every, self.flops_per_token, self.peak = every, flops_per_token, peak_flops
        self.meter, self.losses, self.bar = Meter(), [], None
        self.last: dict = {}

    def on_start(self, loop: Loop) -> None:
        self.meter = Meter()

    def on_step(self, loop: Loop, result: StepResult, data_wait: float) -> None:
        self.meter.add(result.tokens, data_wait)
        self.losses.append(result.loss)
        if loop.progress is not None:
            loop.progress.advance()
            loop.progress.status(f"loss {result.loss:.3f}")
        if loop.step % self.every and loop.step != loop.total_steps:
            return
        speed = self.meter.read()
        record = {
            "step": loop.step,
            "loss": float(np.mean(self.losses)),
            "grad_norm": result.grad_norm,
            "lr": result.lr,  # the lr this step used
            "tokens": loop.tokens_trained(),
            "batch_tokens": loop.batch_rows * loop.cfg.seq_len,
            "tokens_per_s": speed["tokens_per_s"],
            "data_wait_frac": speed["data_wait_frac"],
            "data_stage": loop.loader.stage,
            "domain_shares": loop.loader.shares(),
        }
        if self.peak > 0:
            record["mfu"] = speed["tokens_per_s"] * self.flops_per_token / self.peak
        self.losses, self.last = [], record
        loop.log(record)


class Validator(Callback):
    """Held-out loss per domain every `every` steps (0 = only at the end)."""

    name = "validation"

    def __init__(self, sets: dict[str, list[Batch]], every: int, precision: str):
        self.sets, self.every, self.precision = sets, every, precision
        self.last: dict = {}

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> dict:
        was_training = model.training
        model.eval()
        device = distributed.model_device(model)
        per_domain, total_loss, total_tokens = {}, 0.0, 0
        for domain, batches in self.sets.items():
            loss_sum, count = torch.zeros((), device=device), 0
            for b in batches:
                n = int((b.targets != -100).sum())  # on the host batch: no device sync
                b = distributed.to_device(b, device)
                with autocast(self.precision, device):
                    out = model(b.inputs, targets=b.targets, doc_ids=b.doc_ids)
                loss_sum, count = loss_sum + out.ce.float() * n, count + n
            per_domain[domain] = float(loss_sum) / max(count, 1)
            total_loss, total_tokens = total_loss + float(loss_sum), total_tokens + count
        model.train(was_training)
        return {"val_loss": total_loss / max(total_tokens, 1), "val_loss_per_domain": per_domain}

    def run(self, loop: Loop) -> None:
        self.last = {"step": loop.step, **self.evaluate(loop.model)}
        loop.log(self.last)

    def on_step(self, loop: Loop, result: StepResult, data_wait: float) -> None:
        if self.every and loop.step % self.every == 0 and loop.step != loop.total_steps:
            self.run(loop)

    def on_end(self, loop: Loop) -> None:
        self.run(loop)


class Checkpointer(Callback):
    """Saves a checkpoint every `every` steps (the loop also saves on preemption)."""

    name = "checkpoint"

    def __init__(self, every: int):
        self.every = every

    def on_step(self, loop: Loop, result: StepResult, data_wait: float) -> None:
        if self.every and loop.step % self.every == 0 and loop.step != loop.total_steps:
            loop.save_checkpoint()


class MoEBias(Callback):
    """Auxiliary-loss-free balancing: nudge expert biases after every optimizer step."""

    name = "moe_bias"

    def __init__(self, rate: float):
        self.rate = rate
        self.last: dict = {}

    def on_step(self, loop: Loop, result: StepResult, data_wait: float) -> None:
        if result.stepped and hasattr(loop.raw_model, "update_moe_bias"):
            self.last = loop.raw_model.update_moe_bias(self.rate)
