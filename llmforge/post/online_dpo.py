"""Online and semi-online DPO: preference pairs sampled by the policy during training.

One step (`train_step`) reads top to bottom:

    prompts -> k samples each from the sampler -> rewards (verifier or judge)
    -> chosen = best, rejected = worst; prompts whose samples all tie are dropped and
       more are drawn (up to max_rounds) -> DPO loss against the frozen reference
    -> backward -> grad clip -> optimizer step -> every sync_every steps the sampler
       takes the policy's weights

`sync_every=1` is online DPO: the sampler is the policy itself. A larger N is semi-online
DPO (Lanchantin et al. 2025, "Bridging offline and online RL for LLMs"; the playbook
reports N=100 beating N=10): the sampler stays N steps behind at most. N >= the number
of steps is offline DPO on the starting model's own samples.

Why not TRL: its `OnlineDPOTrainer` samples exactly two completions per prompt, keeps a
tie as a pair, samples from the live policy every step (no semi-online sync) and has only
the sigmoid and IPO losses; `DPOTrainer` tokenises a fixed dataset up front and keeps its
loss in a private method. The loop is short, and `pair_loss` writes out the same DPO
family formulas TRL uses, on summed completion log-probabilities.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from llmforge.config import check, param
from llmforge.post import rl_checkpoint, rl_sampling
from llmforge.post.pairs import best_and_worst, task_prompt
from llmforge.post.sequences import completion_logps

ONLINE_LOSSES = ("sigmoid", "ipo", "apo_zero", "apo_down")


@dataclass(frozen=True)
class OnlineArgs:
    """Online / semi-online DPO: pairs from the policy's own samples during training."""

    enabled: bool = param(False, "sample pairs from the policy while training (prompts= inputs)")
    sync_every: int = param(
        1, "sync the sampler with the policy every N steps: 1 = online, large = semi-online"
    )
    prompts_per_step: int = param(8, "preference pairs per optimizer step")
    max_rounds: int = param(4, "sampling rounds per step to replace prompts whose samples tie")
    backend: Literal["transformers", "vllm"] = param(
        "transformers", "sampler engine; vllm gets the policy's weights at each sync"
    )
    sync_timeout_s: float = param(300.0, "vllm: deadline of a weight sync")
    heldout_samples: int = param(4, "samples per held-out prompt for the before/after reward")

    def __post_init__(self):
        check(self.sync_every >= 1, "sync_every", "must be >= 1")
        check(self.prompts_per_step >= 1, "prompts_per_step", "must be >= 1")
        check(self.max_rounds >= 1, "max_rounds", "must be >= 1")
        check(self.heldout_samples >= 1, "heldout_samples", "must be >= 1")


@dataclass(frozen=True)
class Sampling:
    """How the sampler draws each prompt's candidates."""

    k: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 128
    template_kwargs: dict | None = None


@dataclass(frozen=True)
class Optim:
    """The optimizer side of the loop (mapped from the dpo stage's train section)."""

    steps: int
    lr: float
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    scheduler: str = "constant"
    micro_batch: int = 8
    save_every: int = 100
    seed: int = 0


def pair_loss(logratio_chosen, logratio_rejected, loss: str, beta: float,
              len_chosen=None, len_rejected=None) -> torch.Tensor:  # fmt: skip
    """Per-pair DPO-family loss from log pi/pi_ref of the chosen and rejected completions.

    sigmoid (DPO), ipo (per-token averaged log-ratios, as TRL does), apo_zero and apo_down
    (anchored: push chosen up and rejected down absolutely, or both down).
    """
    delta = logratio_chosen - logratio_rejected
    if loss == "sigmoid":
        return -F.logsigmoid(beta * delta)
    if loss == "ipo":
        per_token = logratio_chosen / len_chosen.clamp(min=1)
        per_token = per_token - logratio_rejected / len_rejected.clamp(min=1)
        return (per_token - 1 / (2 * beta)) ** 2
    if loss == "apo_zero":
        return 1 - torch.sigmoid(beta * logratio_chosen) + torch.sigmoid(beta * logratio_rejected)
    if loss == "apo_down":
        return torch.sigmoid(beta * logratio_chosen) + 1 - torch.sigmoid(beta * delta)
    raise ValueError(f"online DPO supports {ONLINE_LOSSES}, not {loss!r}")


@dataclass
class Pair:
    """One prompt's candidates, their rewards, and which two were picked."""

    row: dict
    completions: list
    scores: list
    chosen: int = 0
    rejected: int = 0


class OnlineDPO:
    """Trains `policy` in place against `ref`; `generator` overrides the sampler (vLLM)."""

    def __init__(self, policy, ref, tokenizer, rows, reward, online: OnlineArgs,
                 sampling: Sampling, optim: Optim, loss: str, beta: float, work: Path,
                 log_metrics: Callable[[dict], None] = lambda m: None, generator=None):  # fmt: skip
        from transformers import get_scheduler

        from llmforge.gen import TransformersGenerator
        from llmforge.post.rl_loop import PromptStream

        self.policy, self.ref, self.tokenizer, self.reward = policy, ref, tokenizer, reward
        self.online, self.sampling, self.optim = online, sampling, optim
        self.loss, self.beta, self.work, self.log_metrics = loss, beta, Path(work), log_metrics
        self.stream = PromptStream(rows, optim.seed)
        # A separate sampler model only when it must lag behind the policy.
        self.sampler_model = None
        if generator is None and online.sync_every > 1:
            self.sampler_model = copy.deepcopy(policy).eval().requires_grad_(False)
        self.generator = generator or TransformersGenerator(
            self.sampler_model or policy, tokenizer, template_kwargs=sampling.template_kwargs
        )
        self.pad_id = getattr(self.generator, "pad_id", None) or tokenizer.pad_token_id or 0
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=optim.lr,
                                           weight_decay=optim.weight_decay)  # fmt: skip
        self.scheduler = get_scheduler(optim.scheduler, self.optimizer, optim.warmup_steps,
                                       optim.steps)  # fmt: skip
        self.step = 0

    # ------------------------------------------------------------ pairs

    def candidates(self, rows: list[dict], seed: int) -> list[Pair]:
        s = self.sampling
        outs = self.generator.generate([task_prompt(r) for r in rows], n=s.k,
                                       temperature=s.temperature,
                                       max_new_tokens=s.max_new_tokens, seed=seed)  # fmt: skip
        return [Pair(row, comps, []) for row, comps in zip(rows, outs, strict=True)]

    def score(self, groups: list[Pair]) -> list[list[float]]:
        flat = [(g, c) for g in groups for c in g.completions]
        scores = self.reward.batch([c.text for _, c in flat], [g.row for g, _ in flat],
                                   [len(c.token_ids) for _, c in flat])  # fmt: skip
        for i, g in enumerate(groups):
            g.scores = scores[i * self.sampling.k : (i + 1) * self.sampling.k]
            picked = best_and_worst([x.value for x in g.scores], [c.text for c in g.completions])
            g.chosen, g.rejected = picked or (0, 0)
        # A tie gives equal values, which dynamic sampling drops.
        return [[g.scores[g.chosen].value, g.scores[g.rejected].value] for g in groups]

    def sample_pairs(self) -> tuple[list[Pair], dict]:
        rounds = iter(range(10**6))
        base = self.optim.seed * 1_000_003 + self.step * 1_009

        def draw(n: int) -> list[Pair]:
            return self.candidates(self.stream.take(n), base + 7 * next(rounds))

        kept, stats = rl_sampling.dynamic_sample(draw, self.score, self.online.prompts_per_step,
                                                 self.online.max_rounds)  # fmt: skip
        return [g for g, _ in kept], stats

    # ------------------------------------------------------------ the step

    def update(self, pairs: list[Pair]) -> dict:
        """One optimizer step on the pairs, in micro-batches."""
        self.policy.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = {"loss": 0.0, "margin": 0.0, "accuracy": 0.0}
        size = self.optim.micro_batch
        for start in range(0, len(pairs), size):
            chunk = pairs[start : start + size]
            samples = [p.completions[p.chosen] for p in chunk] + [
                p.completions[p.rejected] for p in chunk
            ]
            logp = completion_logps(self.policy, samples, self.pad_id)
            with torch.no_grad():
                ref = completion_logps(self.ref, samples, self.pad_id)
            ratio_c, ratio_r = (logp - ref).split(len(chunk))
            lengths = torch.tensor([len(s.token_ids) for s in samples]).split(len(chunk))
            losses = pair_loss(ratio_c, ratio_r, self.loss, self.beta, *lengths)
            (losses.sum() / len(pairs)).backward()
            margin = (ratio_c - ratio_r).detach()
            total["loss"] += losses.sum().item() / len(pairs)
            total["margin"] += margin.sum().item() / len(pairs)
            total["accuracy"] += (margin > 0).sum().item() / len(pairs)
        norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.optim.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return {**total, "grad_norm": float(norm), "lr": self.scheduler.get_last_lr()[0]}

    def train_step(self) -> dict:
        t0 = time.perf_counter()
        pairs, stats = self.sample_pairs()
        t_gen = time.perf_counter() - t0
        metrics = {"step": self.step + 1, **stats, **self.pair_metrics(pairs)}
        if not pairs:
            metrics["skipped"] = True  # every prompt's samples tied in every round
        else:
            metrics.update(self.update(pairs))
        self.step += 1
        metrics["synced"] = self.maybe_sync()
        metrics.update(gen_s=round(t_gen, 4), train_s=round(time.perf_counter() - t0 - t_gen, 4))
        return metrics

    def pair_metrics(self, pairs: list[Pair]) -> dict:
        if not pairs:
            return {"pairs": 0}
        every = [s.value for p in pairs for s in p.scores]
        lengths = [len(c.token_ids) for p in pairs for c in p.completions]
        return {
            "pairs": len(pairs),
            "reward_mean": sum(every) / len(every),
            "reward_chosen": sum(p.scores[p.chosen].value for p in pairs) / len(pairs),
            "reward_rejected": sum(p.scores[p.rejected].value for p in pairs) / len(pairs),
            "completion_len": sum(lengths) / len(lengths),
        }

    # ------------------------------------------------------------ sync, checkpoints, loop

    def maybe_sync(self) -> bool:
        """Give the sampler the policy's weights when a sync is due."""
        if self.step % self.online.sync_every:
            return False
        self.sync()
        return True

    def sync(self) -> None:
        if self.sampler_model is not None:
            self.sampler_model.load_state_dict(self.policy.state_dict())
        elif hasattr(self.generator, "sync_weights"):
            self.generator.sync_weights(self.policy.state_dict(), self.online.sync_timeout_s)

    def _sampler_file(self, step: int) -> Path:
        return self.work / f"sampler-{step:07d}.safetensors"

    def checkpoint(self) -> None:
        """The policy, optimizer and stream via rl_checkpoint, plus the lagging sampler's
        weights, written first so every complete checkpoint has them."""
        from safetensors.torch import save_model

        self.work.mkdir(parents=True, exist_ok=True)
        if self.sampler_model is not None:
            save_model(self.sampler_model, str(self._sampler_file(self.step)))
        rl_checkpoint.save(self.work, self.step, self.policy, self.optimizer, self.scheduler,
                           self.stream.position)  # fmt: skip
        kept = {
            self._sampler_file(int(p.name.split("-")[1]))
            for p in rl_checkpoint.checkpoints(self.work)
        }
        for old in self.work.glob("sampler-*.safetensors"):
            if old not in kept:
                old.unlink()

    def resume(self) -> int:
        """Continue from the newest checkpoint; the step it ends (0 without one)."""
        from safetensors.torch import load_model

        state = rl_checkpoint.load_latest(self.work, self.policy, self.optimizer, self.scheduler)
        if state is None:
            return 0
        self.step, self.stream.position = state["step"], state["position"]
        if self.sampler_model is not None and self._sampler_file(self.step).is_file():
            load_model(self.sampler_model, str(self._sampler_file(self.step)))
        else:  # vLLM, or online: the sampler equals the policy (exact at a sync boundary)
            self.sync()
        return self.step

    def run(self, until: int | None = None, on_step: Callable[[dict], None] = lambda m: None):
        """Train up to step `until` (default: all), checkpointing on the way."""
        last = min(until or self.optim.steps, self.optim.steps)
        history = []
        while self.step < last:
            metrics = self.train_step()
            self.log_metrics(metrics)
            history.append(metrics)
            on_step(metrics)
            if self.step % self.optim.save_every == 0 or self.step == self.optim.steps:
                self.checkpoint()
        return history


def heldout_reward(model, tokenizer, rows: list[dict], reward, sampling: Sampling, n: int,
                   seed: int = 0) -> dict:  # fmt: skip
    """Mean reward (and per-part means) of `n` samples per held-out prompt from `model`."""
    from llmforge.gen import TransformersGenerator

    if not rows:
        return {}
    gen = TransformersGenerator(model, tokenizer, template_kwargs=sampling.template_kwargs)
    outs = gen.generate([task_prompt(r) for r in rows], n=n, temperature=sampling.temperature,
                        max_new_tokens=sampling.max_new_tokens, seed=seed)  # fmt: skip
    flat = [(r, c) for r, comps in zip(rows, outs, strict=True) for c in comps]
    scores = reward.batch([c.text for _, c in flat], [r for r, _ in flat],
                          [len(c.token_ids) for _, c in flat])  # fmt: skip
    parts = sorted({k for s in scores for k in s.parts})
    return {
        "reward_mean": sum(s.value for s in scores) / len(scores),
        **{f"reward/{k}": sum(s.parts.get(k, 0.0) for s in scores) / len(scores) for k in parts},
        "prompts": len(rows),
        "samples": len(scores),
    }
