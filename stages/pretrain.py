"""The pretrain stage: tokens artifact(s) (+ an optional mixture) to a model artifact.

    llmforge pretrain TOKENS [mixture=MIXTURE] -c recipes/tiny/pretrain.yaml -o artifacts/base

Trains a GPT from scratch on packed, mixture-sampled rows (multi-stage schedules, see
docs/stages/pretrain.md), checkpoints into the run's work directory and resumes when the
same command is run again. The output is a transformers directory (stock Llama, Qwen3 or
SmolLM3 when the features allow), the tokenizer, and metrics.jsonl.

Preemption: SIGTERM/SIGUSR1 make the run checkpoint and exit 1 with the partial kept.
Distributed: launch with `torchrun --nproc-per-node N -m stages.app pretrain ...` (FSDP2;
`-s parallel.expert=P` also shares out an MoE model's experts over groups of P ranks).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmforge.artifact import Run
from llmforge.config import param
from llmforge.data.loader import DataConfig
from llmforge.data.mixture import read_mixture
from llmforge.distributed import barrier
from llmforge.model.gpt import GPT, ModelConfig
from llmforge.model.hf import export_hf
from llmforge.stage import Inputs, Role, Stage
from llmforge.train.config import (
    OptimConfig,
    ParallelConfig,
    ScheduleConfig,
    SpikeConfig,
    TrainConfig,
)
from llmforge.train.engine import TrainSpec, seed_everything, train_model


@dataclass(frozen=True)
class Config:
    model: ModelConfig = param(ModelConfig(), "model shape and features")
    data: DataConfig = param(DataConfig(), "data stages, mixtures and packing")
    train: TrainConfig = param(TrainConfig(), "loop: sizes, precision, checkpoints")
    optim: OptimConfig = param(OptimConfig(), "optimizer")
    schedule: ScheduleConfig = param(ScheduleConfig(), "learning-rate schedule")
    spike: SpikeConfig = param(SpikeConfig(), "loss-spike policy")
    parallel: ParallelConfig = param(
        ParallelConfig(), "torchrun: expert: 2+ shares out the MoE experts over that many ranks"
    )


def spec_for(cfg, inputs: Inputs) -> TrainSpec:
    """The engine's TrainSpec from a stage config (pretrain, midtrain, context-extend)."""
    mixture = inputs.get("mixture")
    return TrainSpec(
        data=cfg.data, train=cfg.train, optim=cfg.optim, schedule=cfg.schedule, spike=cfg.spike,
        tokens=[r.path for r in inputs.all("tokens")],
        mixture=read_mixture(mixture.path) if mixture else None,
        parallel=getattr(cfg, "parallel", ParallelConfig()),
    )  # fmt: skip


def publish(model: GPT, inputs: Inputs, out: Run, metrics: dict) -> dict:
    """Rank 0 exports the trained model with the first tokens input's tokenizer."""
    if out.is_main:
        export_hf(model, out.dir, inputs.all("tokens")[0].path / "tokenizer")
    barrier()
    return metrics


def run(cfg: Config, inputs: Inputs, out: Run) -> dict:
    seed_everything(cfg.train.seed)
    model = GPT(cfg.model)
    model, metrics = train_model(model, spec_for(cfg, inputs), out)
    return publish(model, inputs, out, metrics)


STAGE = Stage(
    name="pretrain",
    kind="model",
    config=Config,
    run=run,
    roles={
        "tokens": Role(kinds=("tokens",), min=1, max=None, help="training data (val split too)"),
        "mixture": Role(kinds=("mixture",), min=0, max=1, help="domain weights (e.g. from regmix)"),
    },
    default_role="tokens",
    help="Pretrain a model from scratch on tokens artifacts, by mixture and schedule.",
)
