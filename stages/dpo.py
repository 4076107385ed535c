"""The dpo stage: preference optimisation of a model (artifact or checkpoint dir), via TRL.

    llmforge dpo model=artifacts/sft data=prefs.jsonl -s dpo.loss=apo_zero -o artifacts/dpo
    llmforge dpo model=artifacts/sft prompts=tasks.jsonl strong=artifacts/big weak=artifacts/small
    llmforge dpo model=artifacts/sft prompts=tasks.jsonl          # self-samples, verifier-ranked
    llmforge dpo model=artifacts/sft prompts=tasks.jsonl -s online.enabled=true \
        -s online.sync_every=100 -s train.max_steps=500             # semi-online DPO

Pairs come from preference files (`data=`), or are built by llmforge: delta learning when
a strong and a weak model are given, otherwise samples of the input model ranked by the
task's verifier (or by a judge model, `judge=MODEL` with `judge` in `pairs.reward`).
Held-out preference accuracy and margin are measured before and after. With
`online.enabled` the pairs are sampled during training by a copy of the policy re-synced
every `online.sync_every` steps (llmforge/post/online_dpo.py), and the held-out measure
is the reward of the policy's samples on held-out prompts.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass

from llmforge import log
from llmforge.artifact import Run
from llmforge.causal_lm import ModelArgs
from llmforge.config import check, param
from llmforge.errors import BadInput, ConfigError
from llmforge.post import chat_data, chat_formats, dpo, online_dpo, pairs, rl_checkpoint, trl_bridge
from llmforge.post.dpo import DPOOptions
from llmforge.post.online_dpo import ONLINE_LOSSES, OnlineArgs
from llmforge.post.sft import split_heldout
from llmforge.post.trl_bridge import LoraArgs, TrainArgs
from llmforge.stage import Inputs, Role, Stage
from llmforge.train import tracking
from llmforge.verifiers.judge import JudgeConfig


@dataclass(frozen=True)
class PairArgs:
    """How pairs are built from `prompts=` inputs."""

    k: int = param(
        4, "samples per prompt for verifier-ranked pairs (1 is enough when tasks carry a "
        "gold 'solution': it is chosen wherever the model's sample is wrong)",
    )  # fmt: skip
    temperature: float = param(1.0, "sampling temperature for built pairs (0: greedy)")
    max_new_tokens: int = param(128, "generation budget per completion")
    reward: dict[str, float] = param(
        {"correct": 1.0}, "reward parts and weights ('judge' grades with the judge= model)"
    )

    def __post_init__(self):
        check(self.k >= 1, "k", "must be >= 1")
        check(self.temperature >= 0, "temperature", "must be >= 0")
        check(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")


@dataclass(frozen=True)
class Config:
    model: ModelArgs = param(ModelArgs(), "how the input models load (remote code)")
    train: TrainArgs = param(
        TrainArgs(lr=5e-7, epochs=1), "optimisation and loop (LR 10-20x below SFT's)"
    )
    lora: LoraArgs = param(LoraArgs(), "full fine-tuning or a LoRA/QLoRA adapter")
    dpo: DPOOptions = param(DPOOptions(), "loss type, beta, held-out split")
    pairs: PairArgs = param(PairArgs(), "pair building from prompts= inputs")
    online: OnlineArgs = param(OnlineArgs(), "online / semi-online DPO on prompts= inputs")
    judge: JudgeConfig = param(JudgeConfig(), "the judge's rubric, with a judge= model input")
    fields: dict[str, str] = param(
        {}, "your column names for llmforge's fields, e.g. {prompt: question, chosen: good, "
        "rejected: bad} (see docs/data.md)",
    )  # fmt: skip

    def __post_init__(self):
        chat_formats.check_fields(self.fields)


def _read_tasks(inputs: Inputs) -> list[dict]:
    tasks = []
    for ref in inputs.all("prompts"):
        for file in chat_data.data_files(ref.path):
            for row, line in chat_data.read_rows(file):
                if not isinstance(row.get("prompt"), str):
                    raise BadInput("task rows need a 'prompt' string", path=str(file), line=line)
                tasks.append(row)
    return tasks


def _generator(path, model_args: ModelArgs):
    from llmforge.gen import TransformersGenerator

    model, tokenizer = trl_bridge.load_model(path, model_args=model_args)
    # 64 sequences at once: a small model's decode step costs little more than one
    kwargs = {"batch_size": 64, "template_kwargs": {"enable_thinking": False}}
    return TransformersGenerator(model, tokenizer, **kwargs)


def build_reward(cfg: Config, inputs: Inputs):
    """The pair-ranking reward; a judge= model serves the `judge` part and judge task rows."""
    from llmforge.verifiers import combine

    judge = inputs.get("judge")
    if judge is None:
        if "judge" in cfg.pairs.reward:
            raise BadInput("pairs.reward names 'judge': give the judge model as judge=PATH")
        return combine(cfg.pairs.reward)
    opts = cfg.judge.options(judge.path, seed=cfg.train.seed)
    known = {"judge": opts, "correct": {"options": {"judge": opts}}}
    return combine(cfg.pairs.reward, {k: v for k, v in known.items() if k in cfg.pairs.reward})


def build_pairs(cfg: Config, inputs: Inputs, out: Run) -> tuple[list[dict], str]:
    """All preference rows of the run and where they came from (saved as pairs.jsonl)."""
    rows = [
        r
        for ref in inputs.all("data")
        for r in chat_data.load_source(ref.path, "preference", cfg.fields)
    ]
    tasks, source = _read_tasks(inputs), "files"
    strong, weak = inputs.get("strong"), inputs.get("weak")
    if (strong is None) != (weak is None):
        raise BadInput("delta learning needs both strong=PATH and weak=PATH")
    if (strong or weak) and not tasks:
        raise BadInput("strong/weak models need prompts=PATH to answer")
    if tasks and strong:
        prompts = [pairs.task_prompt(t) for t in tasks]
        rows += pairs.delta_pairs(
            _generator(strong.path, cfg.model),
            _generator(weak.path, cfg.model),
            prompts,
            max_new_tokens=cfg.pairs.max_new_tokens,
            temperature=cfg.pairs.temperature,
            seed=cfg.train.seed,
        )
        source = "delta"
    elif tasks:
        rows += pairs.verifier_pairs(
            _generator(inputs.one("model").path, cfg.model),
            tasks,
            build_reward(cfg, inputs),
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
    if cfg.online.enabled:
        return run_online(cfg, inputs, out)
    model_ref = inputs.one("model")
    rows, source = build_pairs(cfg, inputs, out)
    if cfg.dpo.loss != "kto" and any("label" in r for r in rows):
        raise BadInput(f"unpaired (label) rows need dpo.loss=kto, not {cfg.dpo.loss}")
    train_rows, held = split_heldout(
        rows, cfg.dpo.heldout_fraction, cfg.dpo.heldout_max, cfg.train.seed
    )
    held = [r for r in held if "label" not in r]
    model, tokenizer = trl_bridge.load_model(model_ref.path, cfg.lora, cfg.model)
    ref = inputs.get("ref")
    ref_model = None
    if ref and cfg.dpo.loss != "orpo":
        ref_model = trl_bridge.load_model(ref.path, model_args=cfg.model)[0]
    elif cfg.lora.mode == "full" and not trl_bridge.has_own_chat_template(model_ref.path):
        # TRL would reload the reference from disk, without the embedding rows of the tokens
        # the added chat template brought.
        ref_model = copy.deepcopy(model) if cfg.dpo.loss != "orpo" else None
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


def _check_online(cfg: Config, inputs: Inputs) -> list[dict]:
    if cfg.train.max_steps < 1:
        raise ConfigError("train.max_steps", "online DPO runs a fixed number of steps; set it")
    if cfg.dpo.loss not in ONLINE_LOSSES:
        raise ConfigError("dpo.loss", f"online DPO supports {list(ONLINE_LOSSES)}")
    if cfg.pairs.temperature <= 0:
        raise ConfigError("pairs.temperature", "online DPO samples; must be > 0")
    if cfg.lora.mode != "full":
        raise ConfigError("lora.mode", "online DPO trains the full model")
    if inputs.all("data") or inputs.get("strong") or inputs.get("weak"):
        raise BadInput("online DPO samples its own pairs: give prompts=, not data=/strong=/weak=")
    tasks = _read_tasks(inputs)
    if not tasks:
        raise BadInput("online DPO needs prompts=PATH (task rows to sample answers for)")
    return tasks


def run_online(cfg: Config, inputs: Inputs, out: Run) -> dict:
    """Online / semi-online DPO: pairs from the policy's samples, re-synced every N steps."""
    tasks = _check_online(cfg, inputs)
    train_rows, held = split_heldout(tasks, cfg.dpo.heldout_fraction, cfg.dpo.heldout_max,
                                     cfg.train.seed)  # fmt: skip
    model_ref, ref_input, t = inputs.one("model"), inputs.get("ref"), cfg.train
    model, tokenizer = trl_bridge.load_model(model_ref.path, model_args=cfg.model)
    ref = (
        trl_bridge.load_model(ref_input.path, model_args=cfg.model)[0]
        if ref_input
        else copy.deepcopy(model)
    )
    ref.eval().requires_grad_(False)
    reward, p = build_reward(cfg, inputs), cfg.pairs
    sampling = online_dpo.Sampling(p.k, p.temperature, p.max_new_tokens,
                                   {"enable_thinking": cfg.dpo.think})  # fmt: skip
    optim = online_dpo.Optim(t.max_steps, t.lr, t.weight_decay, t.max_grad_norm,
                             round(t.warmup_ratio * t.max_steps), t.scheduler, t.batch_size,
                             t.save_steps, t.seed)  # fmt: skip
    generator = None
    if cfg.online.backend == "vllm":
        from llmforge.gen import VLLMGenerator

        generator = VLLMGenerator(
            model_ref.path, seed=t.seed, template_kwargs=sampling.template_kwargs
        )

    def measure(m):
        return online_dpo.heldout_reward(m, tokenizer, held, reward, sampling,
                                         cfg.online.heldout_samples, seed=t.seed + 17)  # fmt: skip

    before = measure(model)
    t0 = time.time()
    with tracking.tracked(out) as sink:
        loop = online_dpo.OnlineDPO(model, ref, tokenizer, train_rows, reward, cfg.online,
                                    sampling, optim, cfg.dpo.loss, cfg.dpo.beta, out.work, sink,
                                    generator)  # fmt: skip
        _train_online(loop, out, t.max_steps)
    seconds = time.time() - t0
    lines = (out.dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    history = [m for m in map(json.loads, lines) if "step" in m]
    published = trl_bridge.publish_model(model, tokenizer, model_ref.path, out.dir, cfg.lora)
    trained = [m for m in history if not m.get("skipped")]
    return {
        "mode": "online" if cfg.online.sync_every == 1 else "semi-online",
        "sync_every": cfg.online.sync_every,
        "steps": len(history),
        "steps_skipped": len(history) - len(trained),
        "pairs": sum(m.get("pairs", 0) for m in history),
        "syncs": sum(bool(m.get("synced")) for m in history),
        "heldout_before": before,
        "heldout_after": measure(model),
        "train_seconds": round(seconds, 3),
        **published,
    }


def _train_online(loop, out: Run, steps: int) -> None:
    start = loop.resume() if out.resumed else 0
    if start:
        rl_checkpoint.trim_metrics(out.dir / "metrics.jsonl", start)
        log.info(f"resuming from step {start}")
    with log.progress("dpo online", total=steps) as bar:
        bar.advance(start)

        def on_step(m: dict) -> None:
            bar.advance()
            if "reward_mean" in m:
                bar.status(f"reward {m['reward_mean']:.3f} pairs {m['pairs']}")

        loop.run(on_step=on_step)


STAGE = Stage(
    name="dpo",
    kind="model",
    config=Config,
    run=run,
    roles={
        "model": Role(
            kinds=("model",), min=1, max=1, help="the policy: an artifact or any causal-LM dir"
        ),
        "data": Role(
            kinds=("raw",),
            min=0,
            max=None,
            help="preference jsonl/parquet/save_to_disk: prompt, chosen, rejected as strings or "
            "message lists (or completion, label for KTO)",
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
        "judge": Role(
            kinds=("model",),
            min=0,
            max=1,
            help="judge model grading samples by the judge.rubric (LLM-as-judge reward)",
        ),
    },
    default_role="data",
    help="Preference optimisation (TRL): DPO, IPO, APO-zero/down, KTO, ORPO; builds pairs; "
    "online and semi-online DPO on the policy's own samples.",
)
