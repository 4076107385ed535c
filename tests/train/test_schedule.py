"""LR schedules: exact multipliers at chosen steps, and the LambdaLR wiring."""

import math

import pytest
import torch

from llmforge.errors import ConfigError
from llmforge.train.config import ScheduleConfig
from llmforge.train.schedule import batch_lr_scale, build_schedulers, lr_factor


def test_warmup_is_linear_and_reaches_peak():
    cfg = ScheduleConfig(kind="constant", warmup_steps=4)
    assert [lr_factor(cfg, s, 100) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_values():
    cfg = ScheduleConfig(kind="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(cfg, 10, 110) == pytest.approx(1.0)
    assert lr_factor(cfg, 60, 110) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway
    assert lr_factor(cfg, 110, 110) == pytest.approx(0.1)


def test_wsd_holds_then_decays_over_the_last_fraction():
    cfg = ScheduleConfig(kind="wsd", warmup_steps=10, decay_fraction=0.2, min_lr_ratio=0.0)
    total = 100  # decay over steps 80..99
    assert lr_factor(cfg, 50, total) == 1.0
    assert lr_factor(cfg, 79, total) == 1.0
    assert lr_factor(cfg, 80, total) == pytest.approx(1 - 1 / 20)
    assert lr_factor(cfg, 89, total) == pytest.approx(0.5)
    assert lr_factor(cfg, 99, total) == pytest.approx(0.0)


def test_wsd_sqrt_and_cosine_decay_shapes():
    sqrt = ScheduleConfig(kind="wsd", warmup_steps=0, decay_fraction=0.5, decay_shape="sqrt")
    assert lr_factor(sqrt, 59, 100) == pytest.approx(1 - math.sqrt(0.2))
    cos = ScheduleConfig(kind="wsd", warmup_steps=0, decay_fraction=0.5, decay_shape="cosine")
    assert lr_factor(cos, 74, 100) == pytest.approx(0.5)


def test_multistep_drops_by_gamma_at_milestones():
    cfg = ScheduleConfig(kind="multistep", warmup_steps=0, milestones=[0.5, 0.75], gamma=0.1)
    assert lr_factor(cfg, 49, 100) == 1.0
    assert lr_factor(cfg, 50, 100) == pytest.approx(0.1)
    assert lr_factor(cfg, 80, 100) == pytest.approx(0.01)


def test_schedulers_set_the_optimizer_lr():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=1.0)
    (sched,) = build_schedulers([opt], ScheduleConfig(kind="wsd", warmup_steps=2), 10)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:3] == [0.5, 1.0, 1.0]
    assert seen[-1] == pytest.approx(0.0)


def test_bad_schedule_values_are_config_errors():
    with pytest.raises(ConfigError, match="milestones"):
        ScheduleConfig(milestones=[0.9, 0.5])
    with pytest.raises(ConfigError, match="decay_fraction"):
        ScheduleConfig(decay_fraction=1.5)


def test_sqrt_batch_scaling_multiplies_every_step_by_the_root_of_the_batch_ratio():
    cfg = ScheduleConfig(kind="wsd", warmup_steps=2, batch_scaling="sqrt", reference_batch=1024)
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=1.0)
    (sched,) = build_schedulers([opt], cfg, 10, batch_tokens=4096)  # 4x the batch: 2x the lr
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:3] == pytest.approx([1.0, 2.0, 2.0])
    assert seen == pytest.approx([2 * lr_factor(cfg, s, 10) for s in range(10)])


def test_batch_lr_scale_rules():
    sqrt = ScheduleConfig(batch_scaling="sqrt", reference_batch=1000)
    assert batch_lr_scale(sqrt, 250) == pytest.approx(0.5)
    linear = ScheduleConfig(batch_scaling="linear", reference_batch=1000)
    assert batch_lr_scale(linear, 250) == pytest.approx(0.25)
    assert batch_lr_scale(ScheduleConfig(), 250) == 1.0
    with pytest.raises(ValueError, match="global batch"):
        batch_lr_scale(sqrt, 0)


def test_batch_scaling_needs_a_reference_batch():
    with pytest.raises(ConfigError, match="reference_batch"):
        ScheduleConfig(batch_scaling="sqrt")


def test_engine_scales_the_lr_by_the_global_batch(tmp_path):
    import dataclasses
    import json

    from llmforge.train.engine import train_model
    from tests.train.engine_helpers import make_run, spec, tiny_model
    from tests.train.fake_tokens import make_tokens

    tokens = make_tokens(tmp_path / "tok", {"a": 20})
    base = spec(tokens, 2)  # 4 rows x 32 tokens, one rank: 128 tokens per step
    schedule = dataclasses.replace(base.schedule, batch_scaling="sqrt", reference_batch=512)
    run = make_run(tmp_path / "out")
    train_model(tiny_model(), dataclasses.replace(base, schedule=schedule), run)
    lines = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    lrs = [x["lr"] for x in lines if "lr" in x]
    assert lrs == pytest.approx([base.optim.lr * 0.5] * 2)
