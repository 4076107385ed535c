"""The midtrain stage: a model (artifact or stock checkpoint) plus tokens to a model artifact.

    llmforge midtrain BASE_MODEL tokens=TOKENS [mixture=MIX] -c recipes/tiny/midtrain.yaml

Continued pretraining on a new mixture (reasoning, code, long or curated data) with its own
schedule, on the same engine as pretrain: the model is loaded with `load_gpt` (our export
or a stock Llama/Qwen3/SmolLM3 directory, with or without a manifest), its logits are checked
against transformers' own class before any training, and it is exported again with its
tokenizer, as the family and dtype it came in.
Checkpoints, resume, preemption and torchrun work as in pretrain.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmforge import distributed
from llmforge.artifact import Run
from llmforge.config import param
from llmforge.data.loader import DataConfig
from llmforge.distributed import barrier
from llmforge.model.hf import export_hf, load_gpt
from llmforge.model.hf_stock import check_import_parity, stock_export_args
from llmforge.stage import Inputs, Role, Stage
from llmforge.train.config import (
    OptimConfig,
    ParallelConfig,
    ScheduleConfig,
    SpikeConfig,
    TrainConfig,
)
from llmforge.train.engine import seed_everything, train_model
from stages.pretrain import spec_for


@dataclass(frozen=True)
class Config:
    data: DataConfig = param(DataConfig(), "data stages, mixtures and packing")
    train: TrainConfig = param(TrainConfig(), "loop: sizes, precision, checkpoints")
    optim: OptimConfig = param(OptimConfig(), "optimizer (a lower lr than pretraining suits)")
    schedule: ScheduleConfig = param(ScheduleConfig(), "learning-rate schedule")
    spike: SpikeConfig = param(SpikeConfig(), "loss-spike policy")
    parallel: ParallelConfig = param(
        ParallelConfig(), "torchrun: expert: 2+ shares out the MoE experts over that many ranks"
    )


def run(cfg: Config, inputs: Inputs, out: Run) -> dict:
    seed_everything(cfg.train.seed)
    source = inputs.one("model")
    model = load_gpt(source.path)
    # rank 0 checks; every rank hears the verdict (a failed import stops them all)
    parity = distributed.main_decides(lambda: check_import_parity(source.path, model))
    model, metrics = train_model(model, spec_for(cfg, inputs), out)
    if out.is_main:  # the model directory holds its tokenizer
        export_hf(model, out.dir, source.path, **stock_export_args(source.path))
    barrier()
    return {**metrics, "import_parity_max_diff": parity}


STAGE = Stage(
    name="midtrain",
    kind="model",
    config=Config,
    run=run,
    roles={
        "model": Role(
            kinds=("model",),
            min=1,
            max=1,
            help="the model to continue: an artifact or a stock Llama/Qwen3/SmolLM3 dir",
        ),
        "tokens": Role(kinds=("tokens",), min=1, max=None, help="training data (val split too)"),
        "mixture": Role(kinds=("mixture",), min=0, max=1, help="domain weights"),
    },
    default_role="model",
    help="Continue training a model on a new mixture with its own schedule.",
)
