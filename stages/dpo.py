"""The dpo stage: preference optimisation of a `model` artifact, via TRL.

    llmforge dpo model=artifacts/sft data=prefs.jsonl -s dpo.loss=apo_zero -o artifacts/dpo
    llmforge dpo model=artifacts/sft prompts=tasks.jsonl strong=artifacts/big weak=artifacts/small
    llmforge dpo model=artifacts/sft prompts=tasks.jsonl          # self-samples, verifier-ranked

Pairs come from preference files (`data=`), or are built by llmforge: delta learning when
a strong and a weak model are given, otherwise samples of the input model ranked by the
task's verifier. Held-out preference accuracy and margin are measured before and after.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from llmforge import log
from llmforge.artifact import Run
from llmforge.config import check, param
from llmforge.errors import BadInput
from llmforge.post import chat_data, dpo, pairs, trl_bridge
from llmforge.post.dpo import DPOOptions
from llmforge.post.sft import split_heldout
from llmforge.post.trl_bridge import LoraArgs, TrainArgs
from llmforge.stage import Inputs, Role, Stage


@dataclass(frozen=True)
class PairArgs:
    """How pairs are built from `prompts=` inputs."""

    k: int = param(
        4, "samples per prompt for verifier-ranked pairs (1 is enough when tasks carry a "
        "gold 'solution': it is chosen wherever the model's sample is wrong)",
    )  # fmt: skip
    temperature: float = param(1.0, "sampling temperature for built pairs (0: greedy)")
    max_new_tokens: int = param(128, "generation budget per completion")
    reward: dict[str, float] = param({"correct": 1.0}, "verifier reward parts and weights")

    def __post_init__(self):
        check(self.k >= 1, "k", "must be >= 1")
        check(self.temperature >= 0, "temperature", "must be >= 0")
        check(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")


@dataclass(frozen=True)
class Config:
    train: TrainArgs = param(
        TrainArgs(lr=5e-7, epochs=1), "optimisation and loop (LR 10-20x below SFT's)"
    )
    lora: LoraArgs = param(LoraArgs(), "full fine-tuning or a LoRA/QLoRA adapter")
    dpo: DPOOptions = param(DPOOptions(), "loss type, beta, held-out split")
    pairs: PairArgs = param(PairArgs(), "pair building from prompts= inputs")


def _read_tasks(inputs: Inputs) -> list[dict]:
    tasks = []
    for ref in inputs.all("prompts"):
        for file in chat_data.data_files(ref.path):
            for row, line in chat_data.read_rows(file):
                if not isinstance(row.get("prompt"), str):
                    raise BadInput("task rows need a 'prompt' string", path=str(file), line=line)
                tasks.append(row)
    return tasks


def _generator(path):
    from llmforge.gen import TransformersGenerator

    model, tokenizer = trl_bridge.load_model(path)
    # 64 sequences at once: a small model's decode step costs little more than one
    kwargs = {"batch_size": 64, "template_kwargs": {"enable_thinking": False}}
    return TransformersGenerator(model, tokenizer, **kwargs)


def build_pairs(cfg: Config, inputs: Inputs, out: Run) -> tuple[list[dict], str]:
    """All preference rows of the run and where they came from (saved as pairs.jsonl)."""
    rows = [r for ref in inputs.all("data") for r in chat_data.load_source(ref.path, "preference")]
    tasks, source = _read_tasks(inputs), "files"
    strong, weak = inputs.get("strong"), inputs.get("weak")
    if (strong is None) != (weak is None):
        raise BadInput("delta learning needs both strong=PATH and weak=PATH")
    if (strong or weak) and not tasks:
        raise BadInput("strong/weak models need prompts=PATH to answer")
    if tasks and strong:
        prompts = [pairs.task_prompt(t) for t in tasks]
        rows += pairs.delta_pairs(
            _generator(strong.path),
            _generator(weak.path),
            prompts,
            max_new_tokens=cfg.pairs.max_new_tokens,
            temperature=cfg.pairs.temperature,
            seed=cfg.train.seed,
        )
        source = "delta"
    elif tasks:
        from llmforge.verifiers import combine

        rows += pairs.verifier_pairs(
            _generator(inputs.one("model").path),
            tasks,
            combine(cfg.pairs.reward),
            k=cfg.pairs.k,
            temperature=cfg.pairs.temperature,
            max_new_tokens=cfg.pairs.max_new_tokens,
            seed=cfg.train.seed,
        )
        source = "verifier"
    if len(rows) < 2:
        raise BadInput(f"only {len(rows)} preference pairs; need at least 2 to train")
    if source != "files":
        with open(out.dir / "pairs.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows, source


def run(cfg: Config, inputs: Inputs, out: Run) -> dict:
    model_ref = inputs.one("model")
    rows, source = build_pairs(cfg, inputs, out)
    if cfg.dpo.loss != "kto" and any("label" in r for r in rows):
        raise BadInput(f"unpaired (label) rows need dpo.loss=kto, not {cfg.dpo.loss}")
    train_rows, held = split_heldout(
        rows, cfg.dpo.heldout_fraction, cfg.dpo.heldout_max, cfg.train.seed
    )
    held = [r for r in held if "label" not in r]
    model, tokenizer = trl_bridge.load_model(model_ref.path, cfg.lora)
    ref = inputs.get("ref")
    ref_model = trl_bridge.load_model(ref.path)[0] if ref and cfg.dpo.loss != "orpo" else None
    before = dpo.preference_metrics(model, tokenizer, held, cfg.dpo.think)
    trainer = dpo.trainer_for(
        model,
        ref_model,
        tokenizer,
        train_rows * cfg.train.epochs,
        cfg.dpo,
        cfg.train,
        cfg.lora,
        out.work / "checkpoints",
    )
    steps = cfg.train.max_steps if cfg.train.max_steps > 0 else None
    trainer.add_callback(trl_bridge.trainer_callback(out, steps, "dpo"))
    resume = trl_bridge.resume_checkpoint(out.work / "checkpoints") if out.resumed else None
    if resume:
        log.info(f"resuming from {resume}")
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - t0
    after = dpo.preference_metrics(trainer.model, tokenizer, held, cfg.dpo.think)
    published = trl_bridge.publish_model(
        trainer.model, tokenizer, model_ref.path, out.dir, cfg.lora
    )
    last = next((r for r in reversed(trainer.state.log_history) if "loss" in r), {})
    return {
        "train_loss": round(result.training_loss, 5),
        "steps": trainer.state.global_step,
        "pairs": len(rows),
        "pair_source": source,
        "train_pairs": len(train_rows),
        "heldout_before": before,
        "heldout_after": after,
        "train_last": {k: v for k, v in last.items() if k.startswith(("rewards/", "logps/"))},
        "train_seconds": round(seconds, 3),
        "resumed_from": resume,
        **published,
    }


STAGE = Stage(
    name="dpo",
    kind="model",
    config=Config,
    run=run,
    roles={
        "model": Role(kinds=("model",), min=1, max=1, help="the policy to train"),
        "data": Role(
            kinds=("raw",),
            min=0,
            max=None,
            help="preference jsonl/parquet: prompt, chosen, rejected (or completion, "
            "label for KTO)",
        ),
        "prompts": Role(
            kinds=("raw",),
            min=0,
            max=None,
            help="task jsonl to build pairs from (prompt, reference, verifier)",
        ),
        "strong": Role(kinds=("model",), min=0, max=1, help="delta learning: chosen answers"),
        "weak": Role(kinds=("model",), min=0, max=1, help="delta learning: rejected answers"),
        "ref": Role(
            kinds=("model",),
            min=0,
            max=1,
            help="reference model (default: a frozen copy of the input model)",
        ),
    },
    default_role="data",
    help="Preference optimisation (TRL): DPO, IPO, APO-zero/down, KTO, ORPO; builds pairs.",
)
