"""LR schedules: exact multipliers at chosen steps, and the LambdaLR wiring."""

import math

import pytest
import torch

from llmforge.errors import ConfigError
from llmforge.train.config import BatchWarmup, ScheduleConfig
from llmforge.train.schedule import batch_lr_scale, batch_plan, build_schedulers, lr_factor


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

    from llmforge.data.labelled_tokens import make_tokens
    from llmforge.train.engine import train_model
    from tests.train.engine_helpers import make_run, spec, tiny_model

    tokens = make_tokens(tmp_path / "tok", {"a": 20})
    base = spec(tokens, 2)  # 4 rows x 32 tokens, one rank: 128 tokens per step
    schedule = dataclasses.replace(base.schedule, batch_scaling="sqrt", reference_batch=512)
    run = make_run(tmp_path / "out")
    train_model(tiny_model(), dataclasses.replace(base, schedule=schedule), run)
    lines = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    lrs = [x["lr"] for x in lines if "lr" in x]
    assert lrs == pytest.approx([base.optim.lr * 0.5] * 2)


def linear_warmup(start: int, tokens: int) -> ScheduleConfig:
    return ScheduleConfig(batch_warmup=BatchWarmup(kind="linear", start=start, tokens=tokens))


def test_linear_batch_warmup_grows_by_micro_batches_under_the_ramp():
    # micro-batch 2 rows x 32 tokens on 1 rank: 64 tokens per micro-batch, full 4 = 256
    plan = batch_plan(linear_warmup(64, 1024), batch_size=2, grad_accum=4, world=1, seq_len=32)
    assert plan.full == 8 and plan.phases == ((6, 2), (3, 4), (2, 6))
    warm = plan.warmup_steps
    for step in range(warm):
        trained = plan.rows_before(step) * 32
        ramp = 64 + (256 - 64) * trained / 1024  # the linear ramp in tokens
        assert ramp - 64 < plan.rows_at(step) * 32 <= ramp  # rounded down to a micro-batch
    assert plan.rows_before(warm - 1) * 32 < 1024 <= plan.rows_before(warm) * 32
    # the same global batches on 2 ranks of one row each
    assert batch_plan(linear_warmup(64, 1024), 1, 4, 2, 32) == plan


def test_stepped_batch_warmup_holds_each_batch_until_its_tokens():
    cfg = ScheduleConfig(batch_warmup=BatchWarmup(kind="steps", steps=[[64, 256], [128, 768]]))
    plan = batch_plan(cfg, batch_size=2, grad_accum=4, world=1, seq_len=32)
    assert plan.phases == ((4, 2), (4, 4))  # 4 x 64 = 256 tokens, then 4 x 128 = 512 more
    assert plan.rows_at(8) == plan.full == 8


def test_no_batch_warmup_is_one_constant_batch():
    plan = batch_plan(ScheduleConfig(), batch_size=4, grad_accum=2, world=3, seq_len=16)
    assert plan.phases == () and plan.full == 24 and plan.rows_at(10**6) == 24


def test_batch_warmup_that_cannot_be_built_is_a_config_error():
    with pytest.raises(ConfigError, match="batch_warmup.kind.*grad_accum"):
        batch_plan(linear_warmup(64, 1024), batch_size=2, grad_accum=1, world=1, seq_len=32)
    with pytest.raises(ConfigError, match="batch_warmup.start.*not below the full batch"):
        batch_plan(linear_warmup(256, 1024), batch_size=2, grad_accum=4, world=1, seq_len=32)
    with pytest.raises(ConfigError, match="steps.*increase"):
        BatchWarmup(kind="steps", steps=[[64, 512], [128, 256]])
    with pytest.raises(ConfigError, match="tokens"):
        BatchWarmup(kind="linear", start=64)


def test_batch_scaling_follows_the_batch_of_every_step():
    cfg = ScheduleConfig(kind="constant", warmup_steps=0, batch_scaling="sqrt",
                         reference_batch=256)  # fmt: skip
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=1.0)
    batches = [64, 64, 128, 256, 256]
    (sched,) = build_schedulers([opt], cfg, 5, batch_tokens=lambda s: batches[min(s, 4)])
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.5, 0.5, math.sqrt(0.5), 1.0, 1.0])
