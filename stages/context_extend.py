"""The context-extend stage: a model artifact plus tokens to a model at a longer context.

    llmforge context-extend BASE tokens=TOKENS -s extend.lengths=[32768,65536] \
        -s extend.rope_theta=[1500000,5000000] -s extend.yarn_factor=2

The SmolLM3 recipe, scaled by config: train in stages at growing lengths (4k -> 32k -> 64k
at full scale; 128 -> 256 for the tiny demo), each with a larger RoPE base (ABF). With
`yarn_factor > 1` the exported config also carries YaRN scaling (original length = the
last trained length), so transformers and vLLM run the model at `factor` x that length.

A model that already scales RoPE (a stock checkpoint whose config.json has yarn or llama3
`rope_parameters`, e.g. Llama 3.1/3.2) keeps that scaling: it is part of how the model
encodes positions, so it stays in training and in the export, and each length's ABF base
replaces `rope_theta` underneath it (the scaled frequencies are recomputed from the new
base; factor and original length stay). `yarn_factor > 1` on such a model is an error
(exit 2, before any work): a transformers config holds one scaling, and YaRN over YaRN is
not YaRN. If the source's YaRN was meant for inference only, remove it from its
config.json first.

Each length is a separate engine run with its own checkpoint directory
(`_work/len-{L}/`); a finished length leaves its weights there, so a re-run resumes in
the right stage.

Context parallelism for lengths one device cannot hold: `-s parallel.context=P` under
`torchrun --nproc-per-node N` splits every sequence over groups of P ranks (Ulysses
all-to-all, intra-document masking kept; llmforge/model/context_parallel.py); the N / P
groups are data parallel.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file

from llmforge import distributed, log
from llmforge.artifact import Run
from llmforge.config import check, param
from llmforge.data.loader import DataConfig
from llmforge.distributed import barrier
from llmforge.errors import ConfigError
from llmforge.model.gpt import GPT, RopeScaling
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
class ExtendConfig:
    """Staged lengths, the RoPE base of each, and YaRN for inference beyond the last one."""

    lengths: list[int] = param([256], "training lengths in order (each > the model's current)")
    rope_theta: list[float] = param(
        [100000.0], "RoPE base (ABF) per length; 0 keeps the current base"
    )
    yarn_factor: float = param(
        1.0, "export with YaRN at this factor over the last length (1 = off; an error on a "
        "model that already scales RoPE, whose own scaling is kept)",
    )  # fmt: skip
    cross_document: bool = param(
        True, "attend across packed documents, so rows longer than documents teach long context"
    )

    def __post_init__(self):
        check(len(self.lengths) >= 1, "lengths", "needs at least one length")
        check(all(n > 0 for n in self.lengths), "lengths", "must be > 0")
        check(list(self.lengths) == sorted(set(self.lengths)), "lengths", "must increase")
        check(len(self.rope_theta) == len(self.lengths), "rope_theta", "one base per length")
        check(all(t >= 0 for t in self.rope_theta), "rope_theta", "must be >= 0")
        check(self.yarn_factor >= 1, "yarn_factor", "must be >= 1")


@dataclass(frozen=True)
class Config:
    extend: ExtendConfig = param(ExtendConfig(), "lengths, RoPE bases and YaRN")
    data: DataConfig = param(DataConfig(), "data (intra_doc_mask is set by extend.cross_document)")
    train: TrainConfig = param(TrainConfig(), "loop per length (seq_len is set per length)")
    optim: OptimConfig = param(OptimConfig(), "optimizer (recipes use a lower lr, e.g. 1e-4)")
    schedule: ScheduleConfig = param(ScheduleConfig(), "schedule, restarted for each length")
    spike: SpikeConfig = param(SpikeConfig(), "loss-spike policy")
    parallel: ParallelConfig = param(
        ParallelConfig(), "context: 2+ splits each sequence over that many ranks (torchrun)"
    )


def rescaled(model: GPT, length: int, theta: float) -> GPT:
    """The same weights with a new context length and RoPE base (the rope buffer is rebuilt)."""
    cfg = dataclasses.replace(
        model.cfg, max_seq_len=length, rope_theta=theta or model.cfg.rope_theta
    )
    new = GPT(cfg)
    new.load_state_dict(model.state_dict())
    return new


def with_yarn(model: GPT, factor: float) -> GPT:
    """YaRN over the trained length, for inference at `factor` x that length."""
    cfg = model.cfg
    scaling = RopeScaling(type="yarn", factor=factor, original_max_seq_len=cfg.max_seq_len)
    new = GPT(
        dataclasses.replace(cfg, rope_scaling=scaling, max_seq_len=int(cfg.max_seq_len * factor))
    )
    new.load_state_dict(model.state_dict())
    return new


def check_source_scaling(model: GPT, extend: ExtendConfig) -> None:
    """Refuse a second RoPE scaling on a model that has one (see the module docstring)."""
    own = model.cfg.rope_scaling
    if extend.yarn_factor > 1 and own.type != "none":
        raise ConfigError(
            "extend.yarn_factor",
            f"the model already scales RoPE ({own.type}, factor {own.factor} over "
            f"{own.original_max_seq_len} tokens), which context-extend keeps; set "
            "extend.yarn_factor=1, or remove the scaling from the source's config.json",
        )


def run_length(model: GPT, cfg: Config, inputs: Inputs, out: Run, i: int) -> tuple[GPT, dict]:
    length, theta = cfg.extend.lengths[i], cfg.extend.rope_theta[i]
    work = out.work / f"len-{length}"
    done = work / "done.safetensors"
    model = rescaled(model, length, theta)
    if done.is_file():
        log.info(f"length {length} already trained; loading its weights")
        model.load_state_dict(load_file(done), strict=False)
        return model, {}
    train = dataclasses.replace(cfg.train, seq_len=length, seed=cfg.train.seed + i)
    data = dataclasses.replace(cfg.data, intra_doc_mask=not cfg.extend.cross_document)
    spec = dataclasses.replace(
        spec_for(cfg, inputs), train=train, data=data, extra_log={"length": length},
        parallel=cfg.parallel,
    )  # fmt: skip
    model, metrics = train_model(model, spec, out, work=work)
    if out.is_main:
        tied = model.cfg.tie_embeddings  # safetensors refuses shared tensors
        state = {
            k: v.contiguous() for k, v in model.state_dict().items()
            if not (tied and k == "lm_head.weight")
        }  # fmt: skip
        work.mkdir(parents=True, exist_ok=True)
        save_file(state, str(work / "done.tmp"))
        Path(work / "done.tmp").replace(done)
    barrier()
    return model, metrics


def run(cfg: Config, inputs: Inputs, out: Run) -> dict:
    seed_everything(cfg.train.seed)
    source = inputs.one("model")
    model = load_gpt(source.path)
    if cfg.extend.lengths[0] <= model.cfg.max_seq_len:
        raise ConfigError(
            "extend.lengths",
            f"the first length ({cfg.extend.lengths[0]}) must exceed the model's max_seq_len "
            f"({model.cfg.max_seq_len})",
        )
    check_source_scaling(model, cfg.extend)
    uneven = [n for n in cfg.extend.lengths if n % cfg.parallel.context]
    if uneven:
        raise ConfigError(
            "parallel.context",
            f"{cfg.parallel.context} ranks per sequence do not divide extend.lengths {uneven}",
        )
    # rank 0 checks; every rank hears the verdict (a failed import stops them all)
    parity = distributed.main_decides(lambda: check_import_parity(source.path, model))
    metrics, original = {}, model.cfg.max_seq_len
    for i, length in enumerate(cfg.extend.lengths):
        model, m = run_length(model, cfg, inputs, out, i)
        metrics[f"len_{length}"] = m
    if cfg.extend.yarn_factor > 1:
        model = with_yarn(model, cfg.extend.yarn_factor)
    if out.is_main:
        export_hf(model, out.dir, source.path, **stock_export_args(source.path))
    barrier()
    last = metrics[f"len_{cfg.extend.lengths[-1]}"]
    return {**metrics, "original_max_seq_len": original, "max_seq_len": model.cfg.max_seq_len,
            "final_val_loss": last.get("final_val_loss"), "import_parity_max_diff": parity}  # fmt: skip


STAGE = Stage(
    name="context-extend",
    kind="model",
    config=Config,
    run=run,
    roles={
        "model": Role(
            kinds=("model",),
            min=1,
            max=1,
            help="the model to extend: an artifact or a stock Llama/Qwen3/SmolLM3 dir",
        ),
        "tokens": Role(kinds=("tokens",), min=1, max=None, help="training data (long documents)"),
        "mixture": Role(kinds=("mixture",), min=0, max=1, help="domain weights"),
    },
    default_role="model",
    help="Extend a model's context: staged lengths with RoPE ABF, YaRN at export.",
)
