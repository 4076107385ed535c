"""The entry point the pretrain-family stages call: data, model, optimizers, loop, export.

`train_model(model, spec, out)` takes a built (unsharded) GPT and a `TrainSpec`, runs or
resumes the loop in `out.work`, and returns the trained model (full weights, every expert
included, on every rank: read from the final checkpoint's shards) with the summary
metrics. The stages only decide where the model and data come from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from llmforge import distributed, log
from llmforge.artifact import Run
from llmforge.data.batch_plan import BatchPlan
from llmforge.data.loader import DataConfig, PackedLoader, Source, validation_batches
from llmforge.data.mixture import natural_weights, stage_ends, total_steps_for, weight_vector
from llmforge.data.tokens import TokenStore
from llmforge.errors import BadInput, ConfigError
from llmforge.model.context_parallel import check_heads
from llmforge.model.expert_parallel import check_experts
from llmforge.model.parallelize import parallelize
from llmforge.train import callbacks as cb
from llmforge.train import checkpoint, tracking
from llmforge.train.config import (
    OptimConfig,
    ParallelConfig,
    ScheduleConfig,
    SpikeConfig,
    TrainConfig,
)
from llmforge.train.loop import Loop, resume_plan
from llmforge.train.metrics import flops_per_token, measure_peak_flops, trim_metrics
from llmforge.train.optim import build_optimizers
from llmforge.train.qk_clip import QKClip
from llmforge.train.schedule import batch_lr_scale, batch_plan, build_schedulers
from llmforge.train.step import resolve_precision


@dataclass(frozen=True)
class TrainSpec:
    """Everything the engine needs besides the model: config sections and data paths."""

    data: DataConfig
    train: TrainConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    spike: SpikeConfig
    tokens: list[Path]
    mixture: dict[str, float] | None = None  # from a mixture artifact
    extra_log: dict = field(default_factory=dict)  # merged into every metrics line
    parallel: ParallelConfig = ParallelConfig()


def plan_batches(spec: TrainSpec, work: Path, world: int) -> BatchPlan:
    """The global rows of every step on `world` data-parallel ranks: the config's batch
    (and batch warmup), or, when resuming, the checkpoint's plan (BadInput where the new
    ranks cannot keep it)."""
    t = spec.train
    fresh = batch_plan(spec.schedule, t.batch_size, t.grad_accum, world, t.seq_len)
    resumed = resume_plan(work, t)
    if resumed is None:
        return fresh
    plan, step, saved_world = resumed
    plan.check_ranks(t.batch_size, world, step)
    if plan != fresh:
        log.info(
            f"the checkpoint at step {step} was saved on {saved_world} rank(s) with global "
            f"batches of {plan.sizes_from(0)} rows; on {world} the full batch takes grad_accum "
            f"{plan.full // (t.batch_size * world)}"
        )
    return plan


def plan_data(spec: TrainSpec, source: Source, rank: int, world: int,
              plan: BatchPlan | None = None) -> tuple[PackedLoader, int]:  # fmt: skip
    """The loader of this rank and the total number of optimizer steps.

    `plan` overrides the config's batches (a resume keeps its checkpoint's).
    """
    t = spec.train
    plan = plan or batch_plan(spec.schedule, t.batch_size, t.grad_accum, world, t.seq_len)
    stages = spec.data.stages
    total = t.steps or total_steps_for(stages, plan)
    default = spec.mixture or natural_weights(source.domain_tokens())
    weights = [
        weight_vector(s.weights or default, source.domains, where=f"data.stages[{i}].weights")
        for i, s in enumerate(stages)
    ]
    loader = PackedLoader(
        source, weights, stage_ends(stages, plan, total), t.batch_size, t.seq_len,
        buffer_docs=spec.data.buffer_docs, seed=t.seed, rank=rank, world_size=world,
        intra_doc_mask=spec.data.intra_doc_mask, plan=plan,
    )  # fmt: skip
    return loader, total


def validation_sets(spec: TrainSpec) -> dict:
    """Held-out batches per domain from the `val` split of each tokens input that has one."""
    sets: dict[str, list] = {}
    for path in spec.tokens:
        try:
            store = TokenStore(path, "val")
        except BadInput:
            continue
        for domain in store.domains:
            if len(store.docs_in(domain)):
                batches = validation_batches(
                    store,
                    domain,
                    spec.train.batch_size,
                    spec.train.seq_len,
                    spec.data.val_batches,
                    spec.data.intra_doc_mask,
                )
                sets.setdefault(domain, []).extend(batches)
    return sets


def check_model(model: nn.Module, source: Source, spec: TrainSpec) -> None:
    cfg = model.cfg
    if cfg.vocab_size < source.stores[0].vocab_size:
        raise BadInput(
            f"config key 'model.vocab_size': {cfg.vocab_size} is smaller than the tokens' "
            f"vocabulary ({source.stores[0].vocab_size})"
        )
    if cfg.max_seq_len < spec.train.seq_len:
        raise BadInput(
            f"config key 'train.seq_len': {spec.train.seq_len} exceeds model.max_seq_len "
            f"({cfg.max_seq_len})"
        )


def check_parallel(model: nn.Module, spec: TrainSpec, world: int) -> tuple[int, int]:
    """(context-parallel, expert-parallel) group sizes, checked against the launch and the
    model; each misfit is a ConfigError naming its key."""
    cp, ep = spec.parallel.context, spec.parallel.expert
    for key, size in (("parallel.context", cp), ("parallel.expert", ep)):
        if world % size:
            raise ConfigError(key, f"{size} ranks per group do not divide the {world} ranks "
                              "of this launch (use torchrun --nproc-per-node)")  # fmt: skip
    if cp > 1 and spec.train.seq_len % cp:
        raise ConfigError("parallel.context", f"{cp} does not divide train.seq_len "
                          f"({spec.train.seq_len})")  # fmt: skip
    try:
        if cp > 1:
            check_heads(model.cfg.n_heads, model.cfg.n_kv_heads, cp)
    except ValueError as e:
        raise ConfigError("parallel.context", str(e)) from None
    try:
        if ep > 1:
            check_experts(model, ep)
    except ValueError as e:
        raise ConfigError("parallel.expert", str(e)) from None
    return cp, ep


def train_model(model: nn.Module, spec: TrainSpec, out: Run, work: Path | None = None
                ) -> tuple[nn.Module, dict]:  # fmt: skip
    """Train (or resume training) `model` and return it with summary metrics.

    Checkpoints go to `work` (default `out.work`); staged runs give each stage its own.
    """
    rank, world = distributed.init()
    source = Source([TokenStore(p, "train") for p in spec.tokens])
    check_model(model, source, spec)
    t = spec.train
    work = Path(work or out.work)
    cp, ep = check_parallel(model, spec, world)
    data_world = world // cp  # the ranks of a context-parallel group share one batch
    plan = plan_batches(spec, work, data_world)
    loader, total = plan_data(spec, source, rank // cp, data_world, plan)
    val_sets = validation_sets(spec)
    raw = distributed.place(model)
    model = parallelize(raw, compile=spec.train.compile, context=cp, expert=ep)
    optimizers = build_optimizers(model, spec.optim)
    tokens_at = lambda step: plan.rows_at(step) * t.seq_len  # noqa: E731
    schedulers = build_schedulers(optimizers, spec.schedule, total, tokens_at)
    log_batches(spec.schedule, plan)
    precision = resolve_precision(t.precision, distributed.device())
    peak = measure_peak_flops(precision, t.peak_probe_s)
    per_device_flops = flops_per_token(raw.cfg, t.seq_len) / cp  # a group shares each token
    callbacks = [
        cb.SpikeGuard(spec.spike),
        cb.MoEBias(t.moe_bias_rate),
        *([QKClip(spec.optim.qk_clip, t.log_every)] if spec.optim.qk_clip else []),
        cb.MetricsLogger(t.log_every, per_device_flops, peak),
        cb.Validator(val_sets, t.val_every, precision),
        cb.Checkpointer(t.checkpoint_every),
    ]
    stage = "-".join(f"{k}{v}" for k, v in spec.extra_log.items())  # e.g. length4096
    with tracking.tracked(out, stage) as sink:
        loop = Loop(model, raw, optimizers, schedulers, loader, total, t, work, callbacks,
                    log_fn=lambda r: sink({**r, **spec.extra_log}))  # fmt: skip
        if loop.resume() and out.is_main:
            trim_metrics(out.dir / "metrics.jsonl", loop.step, spec.extra_log)
        log.info(
            f"training {total} steps of {t.batch_size}x{t.seq_len}x{loader.grad_accum}x"
            f"{data_world} tokens in {precision}"
            + (f", each sequence split over {cp} ranks" if cp > 1 else "")
        )
        loop.run()
    full = full_model(loop, raw)
    return full, summary(loop, callbacks, peak, full, precision)


def log_batches(schedule: ScheduleConfig, plan: BatchPlan) -> None:
    """Say what the batch warmup and the lr's batch scaling do to this run."""
    full = plan.full * plan.seq_len
    if plan.phases:
        first = plan.phases[0][1] * plan.seq_len
        log.info(
            f"batch warmup: {plan.warmup_steps} steps growing from {first} to {full} tokens "
            f"per step ({plan.rows_before(plan.warmup_steps) * plan.seq_len} tokens)"
        )
    if schedule.batch_scaling != "none":
        scale = batch_lr_scale(schedule, full)
        start = (
            f" (x{batch_lr_scale(schedule, plan.rows_at(0) * plan.seq_len):.4g} at the first "
            "step of the batch warmup)"
            if plan.phases
            else ""
        )
        log.info(
            f"lr x{scale:.4g} by the {schedule.batch_scaling} rule: global batch {full} "
            f"tokens, reference {schedule.reference_batch}{start}"
        )


def full_model(loop: Loop, raw: nn.Module) -> nn.Module:
    """The trained weights unsharded, as a plain CPU model on every rank.

    Every rank needs it: context-extend trains the next length from it. Under FSDP each
    rank reads the model's entries from the final checkpoint's shards: no optimizer state,
    and no gather of the whole model through one process's collectives.
    """
    if distributed.get_world_size() == 1:
        return raw
    path = loop.final_checkpoint()
    plain = type(raw)(raw.cfg)  # FSDP2's class for `raw` constructs the plain module
    plain.load_state_dict(checkpoint.model_weights(path))
    return plain


def summary(loop: Loop, callbacks: list, peak: float, raw: nn.Module, precision: str) -> dict:
    by_type = {type(c): c for c in callbacks}
    val = by_type[cb.Validator].last
    metrics = by_type[cb.MetricsLogger].last
    out = {
        "steps": loop.step,
        "tokens": loop.tokens_trained(),
        "params": raw.num_params(),
        "final_train_loss": metrics.get("loss"),
        "final_val_loss": val.get("val_loss"),
        "val_loss_per_domain": val.get("val_loss_per_domain", {}),
        "domain_shares": loop.loader.shares(),
        "tokens_per_s": metrics.get("tokens_per_s"),
        "spike_events": by_type[cb.SpikeGuard].events,
        "peak_flops": peak,
        "precision": precision,
    }
    if "mfu" in metrics:
        out["mfu"] = metrics["mfu"]
    return {k: v for k, v in out.items() if not (isinstance(v, float) and math.isnan(v))}


def seed_everything(seed: int) -> None:
    """Identical model init on every rank (data streams differ per rank in the loader)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
