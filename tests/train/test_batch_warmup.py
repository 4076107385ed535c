"""Batch-size warmup in the engine: rows per step, the lr per step, and resume mid-warmup."""

import dataclasses
import json

import pytest
import torch

from llmforge.data.batch_plan import BatchPlan
from llmforge.data.labelled_tokens import make_tokens
from llmforge.data.loader import DataConfig
from llmforge.errors import BadInput, RunFailed
from llmforge.train import checkpoint
from llmforge.train.callbacks import Callback
from llmforge.train.config import BatchWarmup, OptimConfig, ScheduleConfig, TrainConfig
from llmforge.train.engine import plan_batches, train_model
from llmforge.train.loop import Loop
from llmforge.train.optim import build_optimizers
from llmforge.train.schedule import build_schedulers
from tests.train.engine_helpers import make_run, spec, tiny_loader, tiny_model

LINEAR = BatchWarmup(kind="linear", start=64, tokens=1024)  # 64 -> 256 tokens per step
STEPPED = BatchWarmup(kind="steps", steps=[[64, 256], [128, 768]])


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return make_tokens(tmp_path_factory.mktemp("tok"), {"a": 40, "b": 40})


def warmup_spec(tokens, steps: int, warmup: BatchWarmup, batch_size: int = 2):
    """Micro-batches of `batch_size` x 32 tokens, a full batch of 256 tokens per step."""
    base = spec(tokens, steps, batch_size=batch_size, grad_accum=256 // (32 * batch_size))
    schedule = dataclasses.replace(base.schedule, batch_scaling="sqrt", reference_batch=256,
                                   batch_warmup=warmup)  # fmt: skip
    return dataclasses.replace(base, schedule=schedule)


def train_lines(run) -> list[dict]:
    lines = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if "loss" in x]


def test_the_batch_grows_step_by_step_and_the_lr_follows_its_square_root(tokens, tmp_path):
    run = make_run(tmp_path / "out")
    _, metrics = train_model(tiny_model(), warmup_spec(tokens, 14, LINEAR), run)
    lines = train_lines(run)
    batches = [x["batch_tokens"] for x in lines]
    assert batches == [64] * 6 + [128] * 3 + [192] * 2 + [256] * 3
    assert [x["tokens"] for x in lines] == [sum(batches[: i + 1]) for i in range(14)]
    assert metrics["tokens"] == sum(batches)
    lr = OptimConfig(lr=3e-3).lr
    assert [x["lr"] for x in lines] == pytest.approx([lr * (b / 256) ** 0.5 for b in batches])


class RowsPerStep(Callback):
    """Records the target tokens each step trained on (every target is valid here)."""

    def __init__(self):
        self.tokens = []

    def on_step(self, loop, result, data_wait):
        self.tokens.append(result.tokens)


def test_the_loop_draws_the_plans_micro_batches_for_each_step(tokens, tmp_path):
    plan = BatchPlan(full=8, seq_len=32, phases=((2, 2), (1, 6)))  # micro-batches of 2 rows
    model = tiny_model()
    opts = build_optimizers(model, OptimConfig())
    scheds = build_schedulers(opts, ScheduleConfig(kind="constant", warmup_steps=0), 5)
    loader = tiny_loader(tokens, batch_size=2, plan=plan, intra_doc_mask=False)
    cfg = TrainConfig(steps=5, batch_size=2, seq_len=32, grad_accum=4, precision="fp32")
    rows = RowsPerStep()
    Loop(model, model, opts, scheds, loader, 5, cfg, tmp_path, [rows]).run()
    assert rows.tokens == [2 * 32, 2 * 32, 6 * 32, 8 * 32, 8 * 32]
    assert loader.rows == plan.rows_before(5) == 26


def preempted_at(monkeypatch, step: int) -> None:
    """Make the loop act on a preemption signal after `step` (checkpoint, then RunFailed)."""
    monkeypatch.setattr(Loop, "_stop_requested", lambda self: self.step == step)


def test_a_resume_in_the_middle_of_the_warmup_is_bitwise_equal(tokens, tmp_path, monkeypatch):
    whole = make_run(tmp_path / "whole")
    full, _ = train_model(tiny_model(), warmup_spec(tokens, 14, LINEAR), whole)
    run = make_run(tmp_path / "resumed")
    preempted_at(monkeypatch, 7)  # stop after the 7th step, the first of 128 tokens
    with pytest.raises(RunFailed, match="preempted at step 7"):
        train_model(tiny_model(), warmup_spec(tokens, 14, LINEAR), run)
    monkeypatch.undo()
    resumed, _ = train_model(tiny_model(), warmup_spec(tokens, 14, LINEAR), run)
    for name, value in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    assert train_lines(run) == [
        {**x, "tokens_per_s": y["tokens_per_s"], "data_wait_frac": y["data_wait_frac"]}
        for x, y in zip(train_lines(whole), train_lines(run))
    ]


def test_a_resume_on_other_ranks_keeps_the_checkpoints_batches(tokens, tmp_path, monkeypatch):
    run = make_run(tmp_path / "one")
    warm = warmup_spec(tokens, 12, STEPPED, batch_size=1)  # rows 2, then 4, then 8
    preempted_at(monkeypatch, 3)
    with pytest.raises(RunFailed):
        train_model(tiny_model(), warm, run)
    saved = checkpoint.read_state(checkpoint.latest(run.work)).shared["loader"]["batch_plan"]
    assert BatchPlan.from_state(saved).phases == ((4, 2), (4, 4))
    assert plan_batches(warm, run.work, world=2) == BatchPlan.from_state(saved)
    # step 3 still takes 2 rows: 4 ranks of one row cannot, 2 can
    with pytest.raises(BadInput, match=r"cannot resume on 4 rank.*resume on \[1, 2\]"):
        plan_batches(warm, run.work, world=4)
    other = dataclasses.replace(warm, data=DataConfig(val_batches=1))
    assert plan_batches(other, run.work, world=1).full == 8
