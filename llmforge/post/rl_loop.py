"""The RLVR training loop (GRPO/DAPO), owned here rather than taken from TRL's GRPOTrainer.

TRL's trainer generates, scores and builds the batch inside one private method, so
dynamic sampling with refill, masking unparseable trajectories by verifier output and a
resumable prompt position cannot be added without rewriting it. The loop is short enough
to own; one step (`train_step`) reads top to bottom:

    rollouts (dynamic sampling) -> rewards -> group advantages -> sequence masks
    -> clipped token loss per micro-batch -> backward -> grad clip -> optimizer step

Three extras hook in where they act, each off unless asked for: multi-turn tool rollouts
(`gen.tools`) in `rollouts`, SRFT's demonstrations (`post.srft`) in `rollouts` and as
weights and an SFT term in the step, and the PTX loss (`post.ptx`) before the clip.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from llmforge import distributed
from llmforge.gen import TransformersGenerator
from llmforge.gen.base import generate_in_modes
from llmforge.gen.tools import ToolRollout, tool_metrics
from llmforge.post import grpo, rl_checkpoint, rl_sampling
from llmforge.post.rl_config import RLConfig
from llmforge.post.rl_data import as_prompt
from llmforge.post.srft import DemoCompletion


class PromptStream:
    """An endless, seeded, reshuffled-per-epoch stream of prompts with a resumable position."""

    def __init__(self, rows: list[dict], seed: int, position: int = 0):
        self.rows, self.seed, self.position = rows, seed, position

    def take(self, n: int) -> list[dict]:
        out = []
        for _ in range(n):
            epoch, i = divmod(self.position, len(self.rows))
            order = random.Random(self.seed * 100_003 + epoch).sample(
                range(len(self.rows)), len(self.rows)
            )
            out.append(self.rows[order[i]])
            self.position += 1
        return out


@dataclass
class Group:
    """One prompt's rollouts and their scores."""

    row: dict
    completions: list
    scores: list


@dataclass
class RolloutBatch:
    """The groups of one step, and where they came from.

    `index` numbers batches in drawing order (it seeds the sampling); `version` is the
    number of optimizer steps behind the weights that sampled them; `position` is the
    prompt stream's position after drawing them, where a resumed run continues.
    """

    groups: list[Group]
    stats: dict
    temperature: float
    index: int
    version: int
    position: int
    gen_s: float = 0.0


class GRPOLoop:
    """Trains `model` in place; `generator` defaults to transformers on the same model.

    `ptx` (a `post.ptx.PTXStream`) adds the PTX loss to every step, `srft` (a `post.srft.SRFT`)
    trains on demonstrations too; `cfg.tools.enabled` makes rollouts multi-turn."""

    def __init__(
        self,
        model,
        tokenizer,
        rows: list[dict],
        cfg: RLConfig,
        work: Path,
        log_metrics: Callable[[dict], None] = lambda m: None,
        generator=None,
        ptx=None,
        srft=None,
    ):
        self.model, self.tokenizer, self.cfg, self.work = model, tokenizer, cfg, Path(work)
        self.ptx, self.srft = ptx, srft
        self.tools = None
        if cfg.tools.enabled:
            self.tools = ToolRollout(tokenizer, cfg.tools)
        self.log_metrics = log_metrics
        self.generator = generator or TransformersGenerator(
            model, tokenizer, batch_size=cfg.rollout.gen_batch_size
        )
        self.reward = cfg.reward.build(cfg.rollout.max_new_tokens)
        self.stream = PromptStream(rows, cfg.seed)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
        )
        warm = cfg.optim.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0
        )
        self.ref_model = None
        if cfg.loss.kl_coef > 0:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.step = 0

    # ------------------------------------------------------------ rollouts and rewards

    def temperature(self, step: int | None = None) -> float:
        r = self.cfg.rollout
        return rl_sampling.temperature_at(
            self.step if step is None else step, self.cfg.steps, r.temperature, r.temperature_final
        )

    def rollouts(
        self, rows: list[dict], seed: int, temperature: float | None = None
    ) -> list[Group]:
        r = self.cfg.rollout
        outs = sample(
            self.generator,
            rows,
            r.system_prompt,
            self.tools,
            n=r.group_size,
            temperature=self.temperature() if temperature is None else temperature,
            top_p=r.top_p,
            max_new_tokens=r.max_new_tokens,
            seed=seed,
        )
        groups = [Group(row, comps, []) for row, comps in zip(rows, outs, strict=True)]
        if self.srft is not None:
            self.srft.add_demos(groups, getattr(self.generator, "template_kwargs", None))
        return groups

    def score(self, groups: list[Group]) -> list[list[float]]:
        flat = [(g, c) for g in groups for c in g.completions]
        scores = iter(
            self.reward.batch(
                [c.text for _, c in flat], [g.row for g, _ in flat], [written(c) for _, c in flat]
            )
        )
        for g in groups:
            g.scores = [next(scores) for _ in g.completions]
        return [[s.value for s in g.scores] for g in groups]

    def draw_batch(self, index: int, version: Callable[[], int] = lambda: 0,
                   stream: PromptStream | None = None) -> RolloutBatch:  # fmt: skip
        """Batch `index` with dynamic sampling, from `stream` (default: the loop's); seeded by
        (seed, index, round), so a resumed run draws what an uninterrupted one would.
        `version()` tells the weights' version as each round starts; the batch keeps the
        oldest."""
        stream = stream or self.stream
        t0, rounds, versions = time.perf_counter(), iter(range(10**6)), []
        base = self.cfg.seed * 1_000_003 + index * 1_009
        temperature = self.temperature(index)

        def draw(n: int) -> list[Group]:
            versions.append(version())
            return self.rollouts(stream.take(n), base + 7 * next(rounds), temperature)

        kept, stats = rl_sampling.dynamic_sample(
            draw,
            self.score,
            self.cfg.rollout.prompts_per_step,
            self.cfg.rollout.max_rounds,
            self.cfg.rollout.dynamic_sampling,
        )
        groups, gen_s = [g for g, _ in kept], time.perf_counter() - t0
        return RolloutBatch(
            groups, stats, temperature, index, min(versions), stream.position, gen_s
        )

    def next_batch(self) -> RolloutBatch:
        """The batch to train on now: drawn here, with the current weights (synchronous)."""
        return self.draw_batch(self.step, lambda: self.step)

    # ------------------------------------------------------------ the step

    def batch_tensors(self, groups: list[Group], temperature: float) -> dict:
        """Right-padded prompt+completion ids, completion masks, rewards and advantages."""
        comps = [c for g in groups for c in g.completions]
        scores = [s for g in groups for s in g.scores]
        seqs = [c.prompt_token_ids + c.token_ids for c in comps]
        width, t_max = max(map(len, seqs)), max(len(c.token_ids) for c in comps)
        pad = self.generator.pad_id if hasattr(self.generator, "pad_id") else 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        tokens = torch.zeros((len(seqs), t_max), dtype=torch.long)
        where = torch.zeros_like(tokens)
        mask = torch.zeros((len(seqs), t_max))
        sampler = torch.zeros((len(seqs), t_max))
        for i, (seq, c) in enumerate(zip(seqs, comps, strict=True)):
            n, p = len(c.token_ids), len(c.prompt_token_ids)
            ids[i, : len(seq)], attn[i, : len(seq)] = torch.tensor(seq), 1
            tokens[i, :n] = torch.tensor(c.token_ids)
            where[i, :n] = torch.arange(p - 1, p - 1 + n)
            mask[i, :n] = 1.0 if c.mask is None else torch.tensor(c.mask, dtype=torch.float)
            sampler[i, :n] = torch.tensor(c.logprobs)
        loss = self.cfg.loss
        truncated = torch.tensor([c.finish_reason == "length" for c in comps])
        unparseable = torch.tensor([not s.parseable for s in scores])
        dropped = (truncated & loss.mask_truncated) | (unparseable & loss.mask_unparseable)
        sampled = mask.clone()  # every token the model wrote, masked from the loss or not
        mask[dropped] = 0.0
        rewards = torch.tensor([s.value for s in scores])
        adv = grpo.group_advantages(rewards, [len(g.completions) for g in groups],
                                    scale=loss.aggregation != "dr_grpo")  # fmt: skip
        weights = grpo.token_weights(mask, loss.aggregation, self.cfg.rollout.max_new_tokens)
        return dict(
            temperature=temperature,
            ids=ids,
            attn=attn,
            tokens=tokens,
            where=where,
            mask=mask,
            sampler=sampler,
            weights=weights,
            adv=adv,
            rewards=rewards,
            truncated=truncated,
            unparseable=unparseable,
            dropped=dropped,
            sampled=sampled,
            lengths=torch.tensor([len(c.token_ids) for c in comps]),
            demo=torch.tensor([isinstance(c, DemoCompletion) for c in comps], dtype=torch.bool),
        )

    def token_logprobs(self, model, b: dict, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs (at the batch's sampling temperature) and entropies of completion tokens,
        on the CPU like the rest of the batch."""
        logp, entropy = self.device_logprobs(model, b, rows)
        return logp.cpu(), entropy.cpu()

    def device_logprobs(self, model, b: dict, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """`token_logprobs` left on the model's device (no copy back, so no sync)."""
        return logprobs_at(completion_logits(model, b, rows), b, rows)

    @torch.no_grad()
    def policy_entropy(self, b: dict) -> float:
        """Mean per-token entropy of the policy on every token of the batch's own rollouts
        (those masked from the loss too; not on demonstrations), before the update."""
        live = b["sampled"] * ~b["demo"][:, None]
        total = sum(
            (self.token_logprobs(self.model, b, rows)[1] * live[rows]).sum()
            for rows in self.chunks(b)
        )
        return float(total / live.sum().clamp(min=1))

    def old_logprobs(self, b: dict) -> torch.Tensor | None:
        """Log-probs before any update; None when one update per batch (they equal logp)."""
        if self.cfg.optim.updates_per_batch == 1:
            return None
        with torch.no_grad():
            parts = [self.token_logprobs(self.model, b, s)[0] for s in self.chunks(b)]
        return torch.cat(parts)

    def chunks(self, b: dict) -> list[slice]:
        n, size = b["ids"].shape[0], self.cfg.optim.micro_batch
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]

    def update(self, b: dict, old: torch.Tensor | None) -> dict:
        """One optimizer step over the whole batch, in micro-batches.

        The loss and its statistics stay on the policy's device and are summed there (in
        fp64, as the Python floats they were summed in before), so a step reads them back
        in one sync at the end instead of several per micro-batch."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        dev = distributed.model_device(self.model)
        keys = ("adv", "weights", "sampler", "mask") + (("demo",) if "demo" in b else ())
        on_dev = distributed.to_device({k: b[k] for k in keys}, dev)
        on_dev["old"] = None if old is None else old.to(dev)
        sums: dict[str, torch.Tensor] = {}
        for rows in self.chunks(b):
            for k, v in self.micro_batch(b, on_dev, rows).items():
                sums[k] = sums.get(k, 0) + v.double()
        extra = {}
        if self.srft is not None:  # summed nats over the demonstrations' tokens
            sums["srft/sft_loss"] = sums["srft/sft_loss"] / max(float(b["sft_tokens"].sum()), 1.0)
        if self.ptx is not None:  # its gradient joins before the clip
            extra = self.ptx.backward(self.model, self.cfg.optim.micro_batch)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), self.cfg.optim.max_grad_norm
        )
        self.optimizer.step()
        self.scheduler.step()
        names = [*sums, "grad_norm"]
        values = torch.stack([*sums.values(), grad_norm.double().to(dev)]).tolist()  # the sync
        return {**dict(zip(names, values, strict=True)), **extra}

    def micro_batch(self, b: dict, on_dev: dict, rows: slice) -> dict[str, torch.Tensor]:
        """Backward through the loss of `rows`; their share of each metric, on the device."""
        logits = completion_logits(self.model, b, rows)
        logp, entropy = logprobs_at(logits, b, rows)
        old = logp.detach() if on_dev["old"] is None else on_dev["old"][rows]
        if self.srft is not None:
            old = self.srft.behaviour_logprobs(old, on_dev, rows)
        ref = None
        if self.ref_model is not None:
            with torch.no_grad():
                ref = self.device_logprobs(self.ref_model, b, rows)[0].to(logp.device)
        mask, sampler = on_dev["mask"][rows], on_dev["sampler"][rows]
        loss, stats = grpo.policy_loss(
            logp, old, on_dev["adv"][rows], on_dev["weights"][rows], self.cfg.loss, sampler, ref
        )
        terms = {}
        if self.srft is not None:
            sft, nats = self.srft.sft_loss(logits, b, rows)
            loss = loss + sft
            terms["srft/sft_loss"] = nats
        if loss.requires_grad:
            loss.backward()
        live = on_dev["mask"].sum().clamp(min=1)
        share = (mask.sum() / live).double()
        clipped = offpolicy_clipped(old, sampler, mask, self.cfg.loss)
        return {
            "loss": loss.detach(), "entropy": (entropy * mask).sum() / live,
            "clip_frac_low": stats["clip_frac_low"].double() * share,
            "clip_frac_high": stats["clip_frac_high"].double() * share,
            "offpolicy_masked": stats["offpolicy_masked"],
            "offpolicy_clipped_frac": clipped.double() / live.double(),
            **terms,
        }  # fmt: skip

    def train_step(self) -> dict:
        t0 = time.perf_counter()
        batch = self.next_batch()
        t_wait = time.perf_counter() - t0
        metrics = {"step": self.step + 1, "temperature": batch.temperature, **batch.stats}
        if not batch.groups:
            metrics["skipped"] = True  # every group agreed in every round: nothing to learn
        else:
            b = self.batch_tensors(batch.groups, batch.temperature)
            if self.srft is not None:
                metrics.update(self.srft.prepare(b, self.policy_entropy(b)))
            old = self.old_logprobs(b)
            for _ in range(self.cfg.optim.updates_per_batch):
                metrics.update(self.update(b, old))
            metrics.update(self.batch_metrics(batch.groups, b))
        metrics.update(self.heldout_metrics())
        metrics.update(gen_s=round(batch.gen_s, 4), wait_s=round(t_wait, 4),
                       train_s=round(time.perf_counter() - t0 - t_wait, 4))  # fmt: skip
        self.step += 1
        return metrics

    def batch_metrics(self, groups: list[Group], b: dict) -> dict:
        """Rewards and shapes of the policy's own rollouts (demonstrations left out)."""
        own = ~b["demo"]
        pairs = [(c, s) for g in groups for c, s in zip(g.completions, g.scores, strict=True)
                 if not isinstance(c, DemoCompletion)]  # fmt: skip
        scores = [s for _, s in pairs]
        parts = {
            f"reward/{k}": sum(s.parts.get(k, 0.0) for s in scores) / len(scores)
            for k in self.cfg.reward.weights
        }
        lengths = [written(c) for c, _ in pairs]
        return {
            "reward_mean": b["rewards"][own].mean().item(),
            "reward_std": b["rewards"][own].std(unbiased=False).item(),
            **parts,
            "truncated_frac": b["truncated"][own].float().mean().item(),
            "unparseable_frac": b["unparseable"][own].float().mean().item(),
            "masked_frac": b["dropped"][own].float().mean().item(),
            "completion_len": sum(lengths) / len(lengths),
            "tokens": sum(len(c.token_ids) for c, _ in pairs),
            "lr": self.scheduler.get_last_lr()[0],
            **tool_metrics([c for c, _ in pairs]),
        }

    def heldout_metrics(self) -> dict:
        """The held-out PTX loss, at the first step and every `ptx.eval_every` steps."""
        every = self.cfg.ptx.eval_every
        if self.ptx is None or not every or (self.step and (self.step + 1) % every):
            return {}
        loss = self.ptx.heldout_loss(self.model)
        return {} if loss is None else {"ptx/heldout_loss": loss}

    # ------------------------------------------------------------ the loop

    def resume(self) -> int:
        state = rl_checkpoint.load_latest(self.work, self.model, self.optimizer, self.scheduler)
        if state is not None:
            self.step, self.stream.position = state["step"], state["position"]
            self.restore(state.get("extra", {}))
            if self.ptx is not None:
                self.ptx.load_state_dict(state["extra"]["ptx"])
            self.sync_generator()
        return self.step

    def restore(self, extra: dict) -> None:
        """Loop state beyond step and prompt position, as `checkpoint_extra` saved it."""

    def checkpoint_extra(self) -> dict:
        return {}

    def sync_generator(self) -> None:
        """Push the policy's weights into a separate engine (vLLM, servers); a no-op for
        transformers, which samples from the policy itself."""
        timeout = self.cfg.rollout.sync_timeout_s
        if hasattr(self.generator, "push_weights"):
            self.generator.push_weights(self.model, self.step, timeout)
        elif hasattr(self.generator, "sync_weights"):
            self.generator.sync_weights(self.model.state_dict(), timeout)

    def checkpoint(self, position: int | None = None) -> None:
        position = self.stream.position if position is None else position
        extra = self.checkpoint_extra()
        if self.ptx is not None:
            extra["ptx"] = self.ptx.state_dict()  # the PTX data position resumes exactly
        rl_checkpoint.save(self.work, self.step, self.model, self.optimizer, self.scheduler,
                           position, extra=extra)  # fmt: skip

    def run(self, until: int | None = None, on_step: Callable[[dict], None] = lambda m: None):
        """Train up to step `until` (default: all), checkpointing on the way."""
        last = min(until or self.cfg.steps, self.cfg.steps)
        history = []
        while self.step < last:
            metrics = self.train_step()
            self.sync_generator()
            self.log_metrics(metrics)
            history.append(metrics)
            on_step(metrics)
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                self.checkpoint()
        return history


def completion_logits(model, b: dict, rows: slice) -> torch.Tensor:
    """The logits (float, on the model's device) that predict each completion token."""
    dev = distributed.model_device(model)
    ids, attn = b["ids"][rows].to(dev), b["attn"][rows].to(dev)
    logits = model(input_ids=ids, attention_mask=attn).logits
    rows_idx = torch.arange(logits.shape[0], device=dev)[:, None]
    return logits[rows_idx, b["where"][rows].to(dev)].float()


def logprobs_at(logits: torch.Tensor, b: dict, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs, entropies) of the completion tokens at the batch's temperature, on the
    logits' device."""
    logp_all = torch.log_softmax(logits / b["temperature"], dim=-1)
    logp = logp_all.gather(-1, b["tokens"][rows].to(logits.device).unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1).detach()
    return logp, entropy


def written(c) -> int:
    """Tokens the model wrote itself (all of them but a multi-turn rollout's tool turns)."""
    return len(c.token_ids) if c.mask is None else int(sum(c.mask))


def sample(generator, rows: list[dict], system: str | None, tools: ToolRollout | None,
           **sampling) -> list[list]:  # fmt: skip
    """`n` completions per row: multi-turn with the tool when `tools`, else one turn in each
    row's think mode."""
    prompts, modes = [as_prompt(row, system) for row in rows], [row.get("mode") for row in rows]
    if tools is not None:
        return tools.generate(generator, prompts, modes, **sampling)
    return generate_in_modes(generator, prompts, modes, **sampling)


def offpolicy_clipped(old_logp, sampler_logp, mask, args) -> torch.Tensor:
    """Live tokens whose train/sampler ratio the off-policy correction masked (icepop) or
    capped (tis), as a 0-d tensor on the tokens' device."""
    if args.offpolicy == "none":
        return torch.zeros((), dtype=torch.long, device=mask.device)
    ratio = torch.exp(old_logp.detach() - sampler_logp)
    weight, keep = grpo.offpolicy_weights(old_logp.detach(), sampler_logp, args)
    hit = ~keep if args.offpolicy == "icepop" else weight < ratio
    return (hit & (mask > 0)).sum()


def pass_rates(generator, rows: list[dict], cfg: RLConfig, seed: int = 0) -> list[float]:
    """Share of `cfg.filter.k` rollouts per prompt that the `correct` verifier accepts."""
    from llmforge.verifiers import build

    verifier = build("correct", options={"code": {"timeout_s": cfg.reward.code_timeout_s}})
    r, k = cfg.rollout, cfg.filter.k
    tools = ToolRollout(generator.tokenizer, cfg.tools) if cfg.tools.enabled else None
    outs = sample(
        generator,
        rows,
        r.system_prompt,
        tools,
        n=k,
        temperature=r.temperature,
        top_p=r.top_p,
        max_new_tokens=r.max_new_tokens,
        seed=seed,
    )
    flat = [(row, c) for row, comps in zip(rows, outs, strict=True) for c in comps]
    scores = verifier.batch([c.text for _, c in flat], [row for row, _ in flat])
    return [sum(s.value >= 1.0 for s in scores[i * k : (i + 1) * k]) / k for i in range(len(rows))]
