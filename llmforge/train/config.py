"""Config sections of the pretrain engine, shared by pretrain, midtrain and context-extend.

Defaults follow published small-model recipes (SmolLM3, OLMo 2): AdamW betas (0.9, 0.95),
weight decay 0.1, gradient clipping at 1.0, a short warmup, and WSD with a 10-20% decay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmforge.config import check, param


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer: AdamW everywhere, or Muon on the hidden 2-D matrices and AdamW elsewhere."""

    name: Literal["adamw", "muon"] = param("adamw", "adamw, or muon (+ AdamW for the rest)")
    lr: float = param(3e-4, "peak learning rate")
    betas: tuple[float, float] = param((0.9, 0.95), "AdamW betas")
    eps: float = param(1e-8, "AdamW epsilon")
    weight_decay: float = param(0.1, "decoupled weight decay (never on embeddings and norms)")
    muon_momentum: float = param(0.95, "Muon momentum")
    muon_lr_scale: float = param(1.0, "Muon lr = lr * this (Muon's update is RMS-matched to AdamW)")
    qk_clip: float | None = param(
        None,
        "MuonClip (Kimi K2, tau=100): after each step rescale W_q/W_k of every head whose "
        "largest attention logit passed this tau; null = off",
    )

    def __post_init__(self):
        check(self.lr > 0, "lr", "must be > 0")
        check(all(0 <= b < 1 for b in self.betas), "betas", "each must be in [0, 1)")
        check(self.eps > 0, "eps", "must be > 0")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(0 <= self.muon_momentum < 1, "muon_momentum", "must be in [0, 1)")
        check(self.muon_lr_scale > 0, "muon_lr_scale", "must be > 0")
        check(self.qk_clip is None or self.qk_clip > 0, "qk_clip", "must be > 0 or null")


@dataclass(frozen=True)
class BatchWarmup:
    """Batch-size warmup: a smaller global batch for the first tokens of the run.

    The batch grows by micro-batches per rank (train.grad_accum is the count at the full
    batch), so memory stays that of one micro-batch; batches are in tokens per optimizer
    step over all ranks and round down to whole micro-batches on every rank (at least one).
    """

    kind: Literal["none", "linear", "steps"] = param(
        "none",
        "linear: grow from `start` to the full batch over `tokens` (DeepSeek-V3); steps: "
        "the batches of `steps` in turn (as OLMo-core's batch-size scheduler); none: the full "
        "batch always",
    )
    start: int = param(0, "linear: global batch in tokens per optimizer step at the start")
    tokens: int = param(0, "linear: tokens trained while the batch grows to the full batch")
    steps: list[tuple[int, int]] = param(
        [],
        "steps: [[batch, until], ...]: a global batch of `batch` tokens until `until` tokens "
        "were trained, then the next; the full batch after the last",
    )

    def __post_init__(self):
        if self.kind == "linear":
            check(self.start > 0, "start", "linear batch warmup needs start > 0 (tokens)")
            check(self.tokens > 0, "tokens", "linear batch warmup needs tokens > 0")
        if self.kind == "steps":
            check(len(self.steps) > 0, "steps", "needs at least one [batch, until] pair")
            for i, pair in enumerate(self.steps):
                check(len(pair) == 2 and min(pair) > 0, f"steps[{i}]",
                      "must be [batch, until], both > 0 (tokens)")  # fmt: skip
            until = [p[1] for p in self.steps]
            check(until == sorted(set(until)), "steps", "the `until` tokens must increase")


@dataclass(frozen=True)
class ScheduleConfig:
    """The learning-rate schedule, as a multiplier of the peak lr per optimizer step."""

    kind: Literal["wsd", "cosine", "multistep", "constant"] = param(
        "wsd", "wsd (warmup-stable-decay), cosine, multistep or constant (after warmup)"
    )
    warmup_steps: int = param(100, "linear warmup from 0 over this many steps")
    decay_fraction: float = param(0.2, "wsd: share of the steps spent in the final decay")
    decay_shape: Literal["linear", "sqrt", "cosine"] = param("linear", "wsd: shape of the decay")
    min_lr_ratio: float = param(0.0, "final lr / peak lr (wsd, cosine)")
    milestones: list[float] = param(
        [0.8, 0.9], "multistep: fractions of the steps where the lr is multiplied by gamma"
    )
    gamma: float = param(0.316, "multistep: lr factor at each milestone (DeepSeek: 0.316)")
    batch_scaling: Literal["none", "sqrt", "linear"] = param(
        "none",
        "scale the peak lr with the global batch: x sqrt(batch / reference_batch) "
        "(square-root rule, for Adam-type optimizers) or x batch / reference_batch (linear)",
    )
    reference_batch: int = param(
        0, "batch_scaling: global batch in tokens per optimizer step that optim.lr was tuned at"
    )
    batch_warmup: BatchWarmup = param(
        BatchWarmup(), "batch-size warmup (the lr follows batch_scaling step by step, if set)"
    )

    def __post_init__(self):
        check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        check(0 <= self.decay_fraction <= 1, "decay_fraction", "must be in [0, 1]")
        check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1]")
        check(all(0 < m < 1 for m in self.milestones), "milestones", "each must be in (0, 1)")
        check(list(self.milestones) == sorted(self.milestones), "milestones", "must be increasing")
        check(0 < self.gamma <= 1, "gamma", "must be in (0, 1]")
        check(self.reference_batch >= 0, "reference_batch", "must be >= 0")
        if self.batch_scaling != "none":
            check(self.reference_batch > 0, "reference_batch", "batch_scaling needs it > 0")


@dataclass(frozen=True)
class SpikeConfig:
    """Loss-spike and NaN handling."""

    policy: Literal["skip", "rewind", "off"] = param(
        "skip", "on a spike: skip the batch, rewind to the last checkpoint, or only log"
    )
    factor: float = param(3.0, "a spike is a loss above factor x the running median")
    window: int = param(50, "steps in the running median")
    min_history: int = param(10, "no spike checks before this many good steps")
    max_events: int = param(20, "give up (run fails) after this many spikes")

    def __post_init__(self):
        check(self.factor > 1, "factor", "must be > 1")
        check(self.window >= 1, "window", "must be >= 1")
        check(self.min_history >= 1, "min_history", "must be >= 1")
        check(self.max_events >= 1, "max_events", "must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """Loop settings: sizes, precision, logging, validation and checkpoints."""

    steps: int = param(1000, "optimizer steps; 0 = as many as the data stages' token budgets need")
    batch_size: int = param(8, "rows per micro-batch per rank")
    seq_len: int = param(256, "tokens per row")
    grad_accum: int = param(1, "micro-batches per optimizer step")
    grad_clip: float = param(1.0, "clip the global gradient norm to this (0 = off)")
    precision: Literal["auto", "bf16", "fp32"] = param(
        "auto", "autocast dtype; auto = bf16 on GPUs and AVX-512 CPUs, else fp32"
    )
    compile: bool = param(False, "torch.compile the model")
    seed: int = param(0, "seed of init and data order (ranks derive their own data streams)")
    z_loss: float = param(0.0, "z-loss coefficient (1e-4 in OLMo 2 / PaLM)")
    moe_bias_rate: float = param(1e-3, "aux-loss-free MoE bias update rate per step")
    log_every: int = param(10, "steps between metric lines")
    val_every: int = param(0, "steps between validation runs (0 = only at the end)")
    checkpoint_every: int = param(100, "steps between checkpoints (0 = never)")
    keep_checkpoints: int = param(2, "checkpoints kept in the run's work directory")
    async_checkpoint: bool = param(
        False, "write checkpoints from a CPU copy in a background thread (training goes on)"
    )
    peak_probe_s: float = param(0.5, "seconds spent measuring the matmul peak for MFU (0 = skip)")

    def __post_init__(self):
        check(self.steps >= 0, "steps", "must be >= 0")
        for key in ("batch_size", "seq_len", "grad_accum", "log_every", "keep_checkpoints"):
            check(getattr(self, key) >= 1, key, "must be >= 1")
        check(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        check(self.z_loss >= 0, "z_loss", "must be >= 0")
        check(self.val_every >= 0, "val_every", "must be >= 0")
        check(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        check(self.peak_probe_s >= 0, "peak_probe_s", "must be >= 0")


@dataclass(frozen=True)
class ParallelConfig:
    """How the ranks of a torchrun launch share the work; the rest is FSDP2 data parallelism."""

    context: int = param(
        1,
        "ranks that split every sequence (Ulysses context parallelism); they share one "
        "batch. Must divide the world size, model.n_heads and train.seq_len",
    )
    expert: int = param(
        1,
        "ranks that share out each MoE layer's experts (expert parallelism, tokens sent by "
        "all-to-all); every rank still has its own batch. Must divide the world size and "
        "model.moe.n_experts",
    )

    def __post_init__(self):
        check(self.context >= 1, "context", "must be >= 1")
        check(self.expert >= 1, "expert", "must be >= 1")
        if self.expert > 1:
            check(self.context == 1, "expert", "cannot be combined with context > 1 yet")
