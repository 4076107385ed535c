"""The sft stage: supervised fine-tuning of a model on chat data, via TRL.

    llmforge sft model=artifacts/midtrain math=data/math_chat.jsonl chat=data/chat.parquet \\
        -s mix.math=[1.0,0.5] -s mix.chat=[1.0,2.0] -o artifacts/sft

The model is a `model` artifact or any causal-LM checkpoint directory (an outside input,
published as the architecture it came in). Each non-model input is one chat source (jsonl,
parquet or a `datasets` save_to_disk folder, in any format of `chat_formats`); its name is
the role
(`math=PATH`) or, for a bare path, the file name. Weights per source may change per epoch.
Before training a style check scores every source with the student; held-out assistant
loss and think/no_think format compliance are measured before and after training.

With a `teacher=MODEL` input the stage distils on-policy instead (llmforge/post/distill.py):
the sources give only their prompts, the student samples, the teacher scores every token,
and the held-out reverse KL to the teacher is measured before and after.

    llmforge sft model=artifacts/small teacher=artifacts/big chat=data/chat.jsonl -o OUT
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from llmforge import log
from llmforge.artifact import Ref, Run
from llmforge.causal_lm import ModelArgs
from llmforge.config import check, param
from llmforge.errors import BadInput
from llmforge.post import chat_data, chat_formats, distill, sft, style_check, trl_bridge
from llmforge.post.distill import DistillOptions
from llmforge.post.sft import SFTOptions
from llmforge.post.style_check import StyleArgs
from llmforge.post.trl_bridge import LoraArgs, TrainArgs
from llmforge.stage import Inputs, Role, Stage


@dataclass(frozen=True)
class EvalArgs:
    """Before/after measurements."""

    format_prompts: int = param(32, "held-out prompts per mode for the format check (0: skip)")
    max_new_tokens: int = param(96, "generation budget of the format check")

    def __post_init__(self):
        check(self.format_prompts >= 0, "format_prompts", "must be >= 0")
        check(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")


@dataclass(frozen=True)
class Config:
    model: ModelArgs = param(ModelArgs(), "how the input model loads (remote code)")
    train: TrainArgs = param(TrainArgs(), "optimisation and loop")
    lora: LoraArgs = param(LoraArgs(), "full fine-tuning or a LoRA/QLoRA adapter")
    sft: SFTOptions = param(SFTOptions(), "loss, packing, think budget, held-out split")
    mix: dict[str, tuple[float, ...]] = param(
        {}, "weight per source name, one per epoch (the last repeats); unnamed sources get 1.0"
    )
    fields: dict[str, str] = param(
        {}, "your column names for llmforge's fields, e.g. {messages: dialog, role: speaker, "
        "content: text} (see docs/data.md)",
    )  # fmt: skip
    style: StyleArgs = param(StyleArgs(), "reasoning-style check before training")
    eval: EvalArgs = param(EvalArgs(), "before/after measurements")
    distill: DistillOptions = param(DistillOptions(), "on-policy distillation (with teacher=)")

    def __post_init__(self):
        chat_formats.check_fields(self.fields)
        for name, ws in self.mix.items():
            check(
                len(ws) >= 1 and all(w >= 0 for w in ws),
                f"mix.{name}",
                "needs at least one weight, all >= 0",
            )


def source_name(ref: Ref) -> str:
    if ref.role != "data":
        return ref.role
    return ref.path.name.split(".")[0]


def load_sources(inputs: Inputs, fields: dict[str, str]) -> dict[str, list[dict]]:
    sources: dict[str, list[dict]] = {}
    for ref in inputs.refs:
        if ref.role in ("model", "teacher"):
            continue
        name = source_name(ref)
        if name in sources:
            raise BadInput(
                f"two inputs share the source name '{name}'; name them as NAME=PATH",
                path=str(ref.path),
            )
        sources[name] = chat_data.load_source(ref.path, "chat", fields)
    if not sources:
        raise BadInput("sft needs at least one chat data input (NAME=PATH)")
    return sources


def _weights(cfg: Config, sources) -> dict[str, tuple[float, ...]]:
    unknown = sorted(set(cfg.mix) - set(sources))
    if unknown:
        raise BadInput(f"mix weights name unknown sources {unknown}; sources: {sorted(sources)}")
    return {name: cfg.mix.get(name, (1.0,)) for name in sources}


def _style(cfg: Config, model, tokenizer, sources) -> tuple[list[dict], dict]:
    weights = _weights(cfg, sources)
    if not cfg.style.enabled:
        return [], weights
    scores = style_check.score_sources(
        model, tokenizer, sources, cfg.style.rows_per_source, cfg.train.seed
    )
    report = style_check.style_report(scores, cfg.style.z_threshold, cfg.style.min_gap)
    style_check.print_table(report)
    return report, style_check.adjust_weights(weights, report, cfg.style)


def _split(cfg: Config, sources, tokenizer):
    train, held, cut = {}, [], 0
    for i, (name, rows) in enumerate(sources.items()):
        rows, n_cut = sft.budget_rows(rows, tokenizer, cfg.sft.think_budget)
        cut += n_cut
        train[name], h = sft.split_heldout(
            rows, cfg.sft.heldout_fraction, cfg.sft.heldout_max, cfg.train.seed + i
        )
        held += h
    return train, held, cut


def _formats(cfg: Config, trainer, tokenizer, held) -> dict:
    if cfg.eval.format_prompts == 0 or not held:
        return {}
    prompts = sft.prompts_of(held, cfg.eval.format_prompts)
    return sft.format_compliance(trainer.model, tokenizer, prompts, cfg.eval.max_new_tokens)


def run(cfg: Config, inputs: Inputs, out: Run) -> dict:
    if inputs.get("teacher") is not None:
        return run_distill(cfg, inputs, out)
    model_ref = inputs.one("model")
    sources = load_sources(inputs, cfg.fields)
    model, tokenizer = trl_bridge.load_model(model_ref.path, cfg.lora, cfg.model)
    report, weights = _style(cfg, model, tokenizer, sources)
    train_src, held, cut = _split(cfg, sources, tokenizer)
    stream = chat_data.mixed_stream(train_src, weights, cfg.train.epochs, cfg.train.seed)
    trainer = sft.build_trainer(
        model, tokenizer, stream, held, cfg.train, cfg.sft, cfg.lora, out.work / "checkpoints"
    )
    steps = sft.total_steps(trainer, cfg.train)
    trainer.add_callback(trl_bridge.trainer_callback(out, steps, "sft"))
    before = trainer.evaluate()["eval_loss"] if held else None
    formats_before = _formats(cfg, trainer, tokenizer, held)
    resume = trl_bridge.resume_checkpoint(out.work / "checkpoints") if out.resumed else None
    if resume:
        log.info(f"resuming from {resume}")
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - t0
    after = trainer.evaluate()["eval_loss"] if held else None
    formats_after = _formats(cfg, trainer, tokenizer, held)
    published = trl_bridge.publish_model(
        trainer.model, tokenizer, model_ref.path, out.dir, cfg.lora
    )
    tokens = _num_tokens(trainer)
    return {
        "train_loss": round(result.training_loss, 5),
        "steps": trainer.state.global_step,
        "heldout_loss_before": before,
        "heldout_loss_after": after,
        "format_before": formats_before,
        "format_after": formats_after,
        "style": report,
        "train_rows": len(stream),
        "heldout_rows": len(held),
        "think_budget_cut": cut,
        "tokens": tokens,
        "train_seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
        "resumed_from": resume,
        **published,
    }


def run_distill(cfg: Config, inputs: Inputs, out: Run) -> dict:
    """On-policy distillation: the sources give prompts, the teacher scores the student."""
    model_ref, teacher_ref = inputs.one("model"), inputs.one("teacher")
    sources = load_sources(inputs, cfg.fields)
    model, tokenizer = trl_bridge.load_model(model_ref.path, cfg.lora, cfg.model)
    teacher = trl_bridge.load_model(teacher_ref.path, model_args=cfg.model)[0].eval()
    distill.check_vocab(model, teacher, teacher_ref.path)
    train_src, held, _ = _split(cfg, sources, tokenizer)
    stream = chat_data.mixed_stream(train_src, _weights(cfg, sources), cfg.train.epochs,
                                    cfg.train.seed)  # fmt: skip
    opts = cfg.distill
    held_prompts = sft.prompts_of(held, opts.heldout_prompts)
    measure = dict(max_new_tokens=opts.max_new_tokens, seed=cfg.train.seed + 7,
                   template_kwargs=opts.template_kwargs())  # fmt: skip
    before = distill.reverse_kl(model, teacher, tokenizer, held_prompts, **measure)
    old_eos = distill.stop_at_turn_end(model, tokenizer)
    trainer = distill.build_trainer(model, teacher, tokenizer, sft.prompts_of(stream, len(stream)),
                                    cfg.train, opts, cfg.lora, out.work / "checkpoints")  # fmt: skip
    steps = sft.total_steps(trainer, cfg.train)
    trainer.add_callback(trl_bridge.trainer_callback(out, steps, "sft distill"))
    resume = trl_bridge.resume_checkpoint(out.work / "checkpoints") if out.resumed else None
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - t0
    trainer.model.generation_config.eos_token_id = old_eos
    after = distill.reverse_kl(trainer.model, teacher, tokenizer, held_prompts, **measure)
    published = trl_bridge.publish_model(trainer.model, tokenizer, model_ref.path, out.dir,
                                         cfg.lora)  # fmt: skip
    return {
        "mode": "distill",
        "train_loss": round(result.training_loss, 5),
        "steps": trainer.state.global_step,
        "heldout_reverse_kl_before": before,
        "heldout_reverse_kl_after": after,
        "train_prompts": len(stream),
        "train_seconds": round(seconds, 3),
        "resumed_from": resume,
        **published,
    }


def _num_tokens(trainer) -> int:
    logged = [r.get("num_tokens") for r in trainer.state.log_history if "num_tokens" in r]
    return int(logged[-1]) if logged else 0


STAGE = Stage(
    name="sft",
    kind="model",
    config=Config,
    run=run,
    roles={
        "model": Role(
            kinds=("model",),
            min=1,
            max=1,
            help="the model to fine-tune: an artifact or any causal-LM checkpoint dir",
        ),
        "teacher": Role(
            kinds=("model",),
            min=0,
            max=1,
            help="distil on-policy from this model (same tokenizer) instead of SFT",
        ),
        "*": Role(
            kinds=("raw",),
            min=0,
            max=None,
            help="NAME=PATH chat source: jsonl(.gz), parquet, a folder of them or a datasets "
            "save_to_disk folder; rows: messages, ShareGPT conversations or prompt/completion",
        ),
    },
    default_role="data",
    help="Supervised fine-tuning on chat data (TRL): mixing, think budget, LoRA, packing; "
    "on-policy distillation from a teacher= model.",
)
