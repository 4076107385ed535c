"""Experiment tracking with fake `wandb` and `torch.utils.tensorboard` modules put in
sys.modules: neither package is installed here, and a test must not reach W&B."""

import dataclasses
import json
import sys
import types
from types import SimpleNamespace

import pytest

from llmforge.data.labelled_tokens import make_tokens
from llmforge.errors import BadInput
from llmforge.train import tracking
from llmforge.train.engine import train_model
from tests.train.engine_helpers import make_run, spec, tiny_model


class FakeWandbRun:
    def __init__(self, **init):
        self.init, self.logged, self.metrics, self.finished = init, [], [], False

    def define_metric(self, name, step_metric=None):
        self.metrics.append((name, step_metric))

    def log(self, values):
        self.logged.append(values)

    def finish(self):
        self.finished = True


class FakeWriter:
    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.texts, self.closed = log_dir, [], {}, False

    def add_scalar(self, tag, value, global_step):
        self.scalars.append((tag, value, global_step))

    def add_text(self, tag, text):
        self.texts[tag] = text

    def close(self):
        self.closed = True


@pytest.fixture
def fakes(monkeypatch):
    """Install fake wandb and tensorboard modules; returns the runs and writers they make."""
    made = SimpleNamespace(runs=[], writers=[])
    wandb = types.ModuleType("wandb")
    wandb.init = lambda **kw: made.runs.append(FakeWandbRun(**kw)) or made.runs[-1]
    board = types.ModuleType("torch.utils.tensorboard")
    board.SummaryWriter = lambda log_dir: (
        made.writers.append(FakeWriter(log_dir)) or made.writers[-1]
    )
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", board)
    monkeypatch.setenv(tracking.ENV, "wandb,tensorboard")
    monkeypatch.delenv(tracking.TENSORBOARD_DIR_ENV, raising=False)
    return made


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return make_tokens(tmp_path_factory.mktemp("tok"), {"a": 20, "b": 20})


def metric_lines(run) -> list[dict]:
    return [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]


def test_pretrain_engine_sends_every_metrics_line_to_both_trackers(fakes, tokens, tmp_path):
    run = make_run(tmp_path / "out")
    run.config = {"train": {"steps": 4}}
    train_model(tiny_model(), spec(tokens, 4, log_every=2, peak_probe_s=0.05), run)
    lines = metric_lines(run)
    (wb,), (tb,) = fakes.runs, fakes.writers
    assert wb.init["name"] == "pretrain-test" and wb.init["id"] == "test"
    assert wb.init["config"] == run.config and wb.init["resume"] == "allow"
    assert ("*", "step") in wb.metrics and wb.finished and tb.closed
    assert wb.logged == [tracking.scalars(x) for x in lines]  # the same records, same names
    train = [x for x in wb.logged if "loss" in x]
    assert [x["step"] for x in train] == [2, 4]
    assert all({"tokens_per_s", "mfu", "data_wait_frac", "lr"} <= set(x) for x in train)
    assert "val_loss_per_domain/a" in wb.logged[-1]
    assert tb.log_dir == str(run.dir / "tensorboard")
    assert ("loss", train[-1]["loss"], 4) in tb.scalars
    assert json.loads(tb.texts["config"].strip("`\n")) == run.config


def test_a_staged_run_is_its_own_tracker_run(fakes, tokens, tmp_path):
    run = make_run(tmp_path / "out")
    staged = dataclasses.replace(spec(tokens, 2), extra_log={"length": 32})
    train_model(tiny_model(), staged, run)
    assert fakes.runs[0].init["name"] == "pretrain-test-length32"
    assert fakes.runs[0].init["id"] == "test-length32" and fakes.runs[0].init["group"] == "test"
    assert fakes.writers[0].log_dir == str(run.dir / "tensorboard" / "length32")
    assert all(x["length"] == 32 for x in fakes.runs[0].logged)


def test_tensorboard_dir_from_the_environment(fakes, monkeypatch, tmp_path):
    monkeypatch.setenv(tracking.ENV, "tensorboard")
    monkeypatch.setenv(tracking.TENSORBOARD_DIR_ENV, str(tmp_path / "tb"))
    tracker = tracking.open_tracker(make_run(tmp_path / "out"))
    assert fakes.writers[0].log_dir == str(tmp_path / "tb" / "pretrain-test") and not fakes.runs
    tracker.close()


def test_sink_writes_metrics_jsonl_and_closes_on_failure(fakes, tmp_path):
    run = make_run(tmp_path / "out")
    with pytest.raises(RuntimeError), tracking.tracked(run) as sink:
        sink({"step": 1, "reward_mean": 0.5, "phase": "rl", "hist": [1, 2]})
        raise RuntimeError("the loop died")
    assert metric_lines(run) == [{"step": 1, "reward_mean": 0.5, "phase": "rl", "hist": [1, 2]}]
    assert fakes.runs[0].logged == [{"step": 1.0, "reward_mean": 0.5}]  # no strings or lists
    assert fakes.runs[0].finished and fakes.writers[0].closed


@pytest.fixture
def trl_callback():
    """Imported before the fakes: transformers probes for wandb while it imports."""
    from transformers import TrainerCallback  # noqa: F401  (the lazy import happens here)

    from llmforge.post.trl_bridge import trainer_callback

    return trainer_callback


def test_trl_callback_forwards_records_under_their_metrics_jsonl_names(
    trl_callback, fakes, tmp_path
):
    trainer_callback = trl_callback
    run = make_run(tmp_path / "out")
    callback = trainer_callback(run, 2, "sft")
    args, control = None, None
    callback.on_train_begin(args, SimpleNamespace(global_step=0), control)
    callback.on_log(args, SimpleNamespace(global_step=1), control, logs={"loss": 2.5, "lr": 1e-5})
    callback.on_train_end(args, SimpleNamespace(global_step=1), control)
    assert metric_lines(run) == [{"step": 1, "loss": 2.5, "lr": 1e-5}]
    assert fakes.runs[0].logged == [{"step": 1.0, "loss": 2.5, "lr": 1e-5}]
    assert fakes.runs[0].finished


def test_only_rank_zero_tracks(fakes, tmp_path):
    assert tracking.open_tracker(make_run(tmp_path / "out", rank=1, world=2)) is None
    assert not fakes.runs


def test_nothing_is_tracked_unless_asked(monkeypatch, tmp_path):
    monkeypatch.delenv(tracking.ENV, raising=False)
    assert tracking.open_tracker(make_run(tmp_path / "out")) is None
    monkeypatch.setenv(tracking.ENV, "none")
    assert tracking.requested() == []


def test_unknown_or_missing_tracker_is_a_usage_error(monkeypatch, tmp_path):
    monkeypatch.setenv(tracking.ENV, "wandb,mlflow")
    with pytest.raises(BadInput, match="LLMFORGE_TRACK.*mlflow"):
        tracking.requested()
    monkeypatch.setenv(tracking.ENV, "wandb")
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(BadInput, match="pip install wandb"):
        tracking.open_tracker(make_run(tmp_path / "out"))
