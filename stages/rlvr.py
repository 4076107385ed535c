"""The rlvr stage: GRPO/DAPO reinforcement learning of a `model` against verifiable rewards.

    llmforge rlvr artifacts/sft prompts=data/rl.jsonl -s steps=40 -o artifacts/rlvr

Prompts follow the task schema (docs/contract.md); each row's `verifier` picks how its
answer is checked. An optional difficulty filter first keeps prompts the starting model
solves sometimes but not always. Checkpoints in the run's work directory make a re-run
resume where the last one stopped. Optional: a `ptx=TOKENS` input mixes a pretraining loss
into every step, a `demos=CHAT_DATA` input makes the run SRFT, and `tools.enabled=true`
gives the policy a sandboxed Python tool in multi-turn rollouts. See docs/stages/rlvr.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from llmforge import distributed, log, sandbox
from llmforge.artifact import Run
from llmforge.causal_lm import ModelArgs
from llmforge.errors import BadInput, RunFailed
from llmforge.post.rl_config import RLConfig
from llmforge.post.rl_data import assign_modes, read_prompts
from llmforge.post.trl_bridge import LoraArgs, load_model, publish_model
from llmforge.stage import Inputs, Role, Stage
from llmforge.train import tracking

Config = RLConfig


def load_policy(path: Path, model_args: ModelArgs | None = None):
    """Model (fp32, train mode, on this rank's device) and tokenizer of a `model` artifact
    or checkpoint dir."""
    model, tokenizer = load_model(path, model_args=model_args)
    return distributed.place(model.float().train()), tokenizer


def make_generator(cfg: Config, model, tokenizer, path: Path, work: Path):
    from llmforge.gen import TransformersGenerator, VLLMGenerator

    if cfg.rollout.backend == "vllm":
        return VLLMGenerator(path, seed=cfg.seed)
    if cfg.rollout.backend == "servers":
        from llmforge.gen.server_pool import open_pool

        return open_pool(cfg.rollout.servers, path, tokenizer, work, cfg.rollout.sync_timeout_s)
    return TransformersGenerator(model, tokenizer, batch_size=cfg.rollout.gen_batch_size)


def make_loop(cfg: Config, model, tokenizer, rows: list[dict], out: Run, generator, sink=None,
              extras: dict | None = None):  # fmt: skip
    """The synchronous loop, or the asynchronous one when rollouts may lag behind; `sink`
    takes the metrics (default: the run's metrics.jsonl); `extras` are the PTX stream and
    SRFT demonstrations (`make_extras`)."""
    from llmforge.post.rl_async import AsyncGRPOLoop
    from llmforge.post.rl_loop import GRPOLoop

    loop = AsyncGRPOLoop if cfg.rollout.max_off_policy_steps > 0 else GRPOLoop
    return loop(model, tokenizer, rows, cfg, out.work, sink or out.log_metrics, generator,
                **(extras or {}))  # fmt: skip


def make_extras(cfg: Config, inputs: Inputs, model, tokenizer, rows: list[dict]) -> dict:
    """The PTX stream of a `ptx` input and the SRFT demonstrations of a `demos` input."""
    extras: dict = {}
    if ptx := inputs.get("ptx"):
        from llmforge.post.ptx import PTXStream

        extras["ptx"] = PTXStream(ptx.path, cfg.ptx, cfg.seed, model, tokenizer)
    if demos := inputs.all("demos"):
        from llmforge.gen.base import stop_token_ids
        from llmforge.post.chat_data import load_source
        from llmforge.post.srft import SRFT

        if cfg.tools.enabled:
            raise BadInput("srft demonstrations with tools.enabled are not supported: a "
                           "demonstration would need its tool turns masked; drop one of them")  # fmt: skip
        found = [row for ref in demos for row in load_source(ref.path, "chat")]
        r = cfg.rollout
        extras["srft"] = SRFT(found, rows, tokenizer, cfg.srft, stop_token_ids(tokenizer),
                              r.max_new_tokens, r.system_prompt)  # fmt: skip
    return extras


def difficulty_filter(cfg: Config, generator, rows: list[dict], out: Run) -> tuple[list, dict]:
    """Keep prompts with pass rate in (low, high]; cached in the work dir for resumes."""
    from llmforge.post.rl_loop import pass_rates
    from llmforge.post.rl_sampling import difficulty_filter as keep_of
    from llmforge.post.rl_sampling import pass_rate_histogram

    if not cfg.filter.enabled:
        return rows, {}
    cache = out.work / "filter.json"
    if cache.is_file():
        found = json.loads(cache.read_text())
    else:
        pool = rows[: cfg.filter.max_prompts] if cfg.filter.max_prompts else rows
        rates = pass_rates(generator, pool, cfg, seed=cfg.seed + 99_991)
        kept = keep_of(rates, cfg.filter.low, cfg.filter.high)
        found = {
            "ids": [pool[i]["id"] for i in kept],
            "prompts": len(pool),
            "histogram_before": pass_rate_histogram(rates),
            "histogram_after": pass_rate_histogram([rates[i] for i in kept]),
        }
        cache.write_text(json.dumps(found))
        out.log_metrics({"phase": "difficulty_filter", **found, "ids": len(found["ids"])})
    ids = set(found["ids"])
    kept_rows = [r for r in rows if r["id"] in ids]
    log.info(
        f"difficulty filter kept {len(kept_rows)} of {found['prompts']} prompts "
        f"(pass rate in ({cfg.filter.low}, {cfg.filter.high}])"
    )
    if not kept_rows:
        raise RunFailed(
            f"the difficulty filter kept no prompts; pass rates: "
            f"{found['histogram_before']}; widen filter.low/filter.high"
        )
    metrics = {
        "filter_kept": len(kept_rows),
        "filter_prompts": found["prompts"],
        "pass_rate_hist_before": found["histogram_before"],
        "pass_rate_hist_after": found["histogram_after"],
    }
    return kept_rows, metrics


def _status(m: dict) -> str:
    if m.get("skipped"):
        return "skipped: no informative groups"
    correct = m.get("reward/correct")
    acc = f" correct {correct:.2f}" if correct is not None else ""
    return f"reward {m['reward_mean']:.3f}{acc} len {m['completion_len']:.0f}"


def train(loop, cfg: Config, out: Run) -> list[dict]:
    from llmforge.post import rl_checkpoint

    start = loop.resume() if out.resumed else 0
    if start:
        rl_checkpoint.trim_metrics(out.dir / "metrics.jsonl", start)
        log.info(f"resuming from step {start}")
    elif cfg.rollout.backend == "servers":
        loop.sync_generator()  # servers named by URL may hold any weights
    with log.progress("rlvr", total=cfg.steps) as bar:
        bar.advance(start)

        def on_step(m: dict) -> None:
            bar.advance()
            bar.status(_status(m))

        return loop.run(on_step=on_step)


def summarize(history: list[dict], seconds: float) -> dict:
    trained = [m for m in history if not m.get("skipped")]

    def mean(key: str, rows: list[dict]) -> float | None:
        vals = [m[key] for m in rows if key in m]
        return round(sum(vals) / len(vals), 5) if vals else None

    head, tail = trained[:5], trained[-5:]
    gen = sum(m["gen_s"] for m in history)
    total = gen + sum(m["train_s"] for m in history)
    return {
        "steps_run": len(history),
        "steps_skipped": len(history) - len(trained),
        "reward_first5": mean("reward_mean", head),
        "reward_last5": mean("reward_mean", tail),
        "correct_first5": mean("reward/correct", head),
        "correct_last5": mean("reward/correct", tail),
        "tokens": sum(m.get("tokens", 0) for m in history),
        "train_seconds": round(seconds, 3),
        "generation_fraction": round(gen / total, 4) if total else None,
        **async_summary(history),
        **extras_summary(history),
    }


def extras_summary(history: list[dict]) -> dict:
    """First and last figures of the PTX, SRFT and tool metrics, for the runs that have them."""
    out = {}
    for key in ("ptx/loss", "ptx/heldout_loss", "srft/sft_loss", "srft/w_sft", "tools/turns",
                "tools/calls", "tools/error_frac"):  # fmt: skip
        vals = [m[key] for m in history if m.get(key) is not None]
        if vals:
            name = key.replace("/", "_")
            out[f"{name}_first"], out[f"{name}_last"] = round(vals[0], 5), round(vals[-1], 5)
    return out


def async_summary(history: list[dict]) -> dict:
    """Off-policy lag, dropped batches and the trainer's idle share of an asynchronous run."""
    if not any("off_policy_lag" in m for m in history):
        return {}
    wait = sum(m.get("wait_s", 0.0) for m in history)
    busy = wait + sum(m["train_s"] for m in history)
    return {
        "max_off_policy_lag": max(m.get("off_policy_lag", 0) for m in history),
        "stale_dropped": sum(m.get("stale_dropped", 0) for m in history),
        "rollout_wait_fraction": round(wait / busy, 4) if busy else None,
    }


def run(cfg: Config, inputs: Inputs, out: Run) -> dict:
    import torch

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    wall = sandbox.isolation()  # before any work: LLMFORGE_SANDBOX=bwrap may be unmet
    model_ref = inputs.one("model")
    rows = [row for ref in inputs.all("prompts") for row in read_prompts(ref.path)]
    rows = assign_modes(rows, cfg.rollout.modes)
    model, tokenizer = load_policy(model_ref.path, cfg.model)
    extras = make_extras(cfg, inputs, model, tokenizer, rows)
    generator = make_generator(cfg, model, tokenizer, model_ref.path, out.work)
    t0 = time.time()
    try:
        rows, filter_metrics = difficulty_filter(cfg, generator, rows, out)
        with tracking.tracked(out) as sink:  # metrics.jsonl, and W&B/TensorBoard if asked
            loop = make_loop(cfg, model, tokenizer, rows, out, generator, sink, extras)
            train(loop, cfg, out)
    finally:
        if hasattr(generator, "close"):
            generator.close()
    # Summarise the whole run from metrics.jsonl, so a resumed run reports every step.
    lines = (out.dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    history = [m for m in map(json.loads, lines) if "step" in m]
    publish_model(model, tokenizer, model_ref.path, out.dir, LoraArgs())  # full fine-tuning
    summary = summarize(history, time.time() - t0)
    return {"prompts": len(rows), **filter_metrics, **summary, "sandbox": wall}


STAGE = Stage(
    name="rlvr",
    kind="model",
    config=Config,
    run=run,
    roles={
        "model": Role(
            kinds=("model",), min=1, max=1, help="the policy: an artifact or any causal-LM dir"
        ),
        "prompts": Role(
            kinds=("raw",),
            min=1,
            max=None,
            help="task jsonl/parquet/save_to_disk: id, prompt, reference, tests, verifier, chat",
        ),
        "ptx": Role(
            kinds=("tokens",),
            min=0,
            max=1,
            help="PTX: curated pretraining tokens whose loss (ptx.weight) joins every step",
        ),
        "demos": Role(
            kinds=("raw",),
            min=0,
            max=None,
            help="SRFT: chat data (as sft reads) with demonstrations for the prompts",
        ),
    },
    default_role="model",
    help="RL with verifiable rewards (GRPO/DAPO): dynamic sampling, clip-higher, masking.",
)
