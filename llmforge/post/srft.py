"""SRFT: supervised and reinforcement fine-tuning in one stage (Fu et al. 2025, arXiv 2506.19767).

Each RL prompt that has a demonstration (a `demos=CHAT_DATA` input of rlvr) trains on it in
two ways while the policy's own rollouts train by GRPO, with weights from the policy's
entropy H (the mean per-token entropy on every token of this step's rollouts, those masked
from the loss too, measured before the update, no gradient through it):

- **SFT on the demonstration**, `w_sft * NLL`, with `w_sft = 0.5 * exp(-H)`: the more
  uncertain the policy, the less the demonstrations pull it (a token mean over the
  batch's demonstration tokens, at temperature 1);
- **off-policy RL on the demonstration**: it joins its prompt's group as one more member,
  scored by the same reward, so it enters the group's advantage baseline (the mixed
  group of LUFFY, which SRFT builds on) and a group whose rollouts all failed still
  teaches; its importance ratio is pi_theta / pi_behaviour with pi_behaviour = 1, as the
  paper sets it, under the same clipped surrogate;
- **RL on the rollouts**: rollouts with a positive advantage get the weight
  `w_rl = 0.1 * exp(H)`, those with a negative one weight 1; a high entropy so pulls harder
  towards what worked, which keeps the entropy from drifting.

Where we simplified: the paper writes the rollout term with binary rewards as likelihood on
positive and unlikelihood on negative samples; we keep GRPO's clipped surrogate with group
advantages (with one update per batch it is that objective scaled by each sample's
advantage) and put `w_rl` on the positive side. A demonstration is matched to a prompt by
`id`, else by its last user message; prompts without one are plain GRPO. Demonstrations
longer than `rollout.max_new_tokens` are cut there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from llmforge import log
from llmforge.errors import BadInput
from llmforge.gen.base import (
    Completion,
    has_chat_template,
    mode_kwargs,
    render_prompt,
    to_completion,
)
from llmforge.post.chat_data import to_trl_chat
from llmforge.post.rl_data import as_prompt
from llmforge.post.rl_options import SRFTArgs


@dataclass(frozen=True)
class DemoCompletion(Completion):
    """A demonstration placed in its prompt's group; its `logprobs` are 0 (behaviour 1)."""


def entropy_weights(entropy: float, args: SRFTArgs) -> tuple[float, float]:
    """(w_sft, w_rl) = (sft_coef * exp(-H), rl_coef * exp(H)); the coefficients alone
    without entropy weighting."""
    if not args.entropy_weighting:
        return args.sft_coef, args.rl_coef
    return args.sft_coef * math.exp(-entropy), args.rl_coef * math.exp(entropy)


def prompt_key(prompt) -> str:
    """What matches a demonstration to a prompt when ids differ: the last user message."""
    if isinstance(prompt, str):
        return prompt.strip()
    users = [m.get("content") or "" for m in prompt if m.get("role") == "user"]
    return users[-1].strip() if users else ""


def demo_prompt_and_answer(demo: Mapping) -> tuple[object, dict]:
    """(the prompt the demonstration answers, its final assistant message)."""
    if "messages" not in demo:  # plain prompt/completion text
        return demo["prompt"], {"role": "assistant", "content": demo["completion"]}
    messages = to_trl_chat(demo)["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]


def match(demos: list[dict], prompts: list[dict]) -> dict[str, dict]:
    """Prompt id -> the demonstration for it: same `id`, else same last user message."""
    by_id, by_text = {}, {}
    for demo in demos:
        prompt, _ = demo_prompt_and_answer(demo)
        if demo.get("id") is not None:
            by_id.setdefault(str(demo["id"]), demo)
        by_text.setdefault(prompt_key(prompt), demo)
    found = {}
    for row in prompts:
        demo = by_id.get(row["id"]) or by_text.get(prompt_key(row["prompt"]))
        if demo is not None:
            found[row["id"]] = demo
    if not found:
        raise BadInput("srft: no demonstration matches an RL prompt (by id or by the user "
                       "message); check the demos input")  # fmt: skip
    log.info(f"srft: {len(found)} of {len(prompts)} prompts have a demonstration")
    return found


class SRFT:
    """The demonstrations of the run's prompts and the SRFT terms of each step."""

    def __init__(self, demos: list[dict], prompts: list[dict], tokenizer, args: SRFTArgs,
                 stop_ids: list[int], max_new_tokens: int, system: str | None = None):  # fmt: skip
        self.of, self.tokenizer, self.args = match(demos, prompts), tokenizer, args
        self.stop_ids, self.max_new_tokens, self.system = stop_ids, max_new_tokens, system
        self._answers: dict[tuple, list[int]] = {}

    # ------------------------------------------------------------ rollouts

    def add_demos(self, groups: list, template_kwargs: Mapping | None = None) -> None:
        """Append each group's demonstration (if its prompt has one) to its completions."""
        for g in groups:
            if g.row["id"] in self.of and g.completions:
                kwargs = {**(template_kwargs or {}), **mode_kwargs(g.row.get("mode"))}
                g.completions.append(self.completion(g.row, g.completions[0].prompt_token_ids,
                                                     kwargs))  # fmt: skip

    def completion(self, row: dict, prompt_ids: list[int], kwargs: Mapping) -> DemoCompletion:
        key = (row["id"], tuple(sorted(kwargs.items())))
        if key not in self._answers:
            self._answers[key] = self.answer_ids(row, kwargs)
        ids = self._answers[key][: self.max_new_tokens]
        c = to_completion(self.tokenizer, ids, [0.0] * len(ids), self.stop_ids, prompt_ids)
        return DemoCompletion(c.text, c.token_ids, c.logprobs, c.finish_reason, c.prompt_token_ids)

    def answer_ids(self, row: dict, kwargs: Mapping) -> list[int]:
        """The tokens of the demonstration's answer as the policy would write them after
        this row's prompt: the chat template's rendering of the answer turn."""
        _, answer = demo_prompt_and_answer(self.of[row["id"]])
        prompt = as_prompt(row, self.system)
        if isinstance(prompt, str) or not has_chat_template(self.tokenizer):
            ids = self.tokenizer(answer["content"], add_special_tokens=False)["input_ids"]
            return ids + self.stop_ids[:1]
        head = render_prompt(self.tokenizer, prompt, **kwargs)
        full = self.tokenizer.apply_chat_template([*prompt, answer], tokenize=False, **kwargs)
        if not full.startswith(head):
            raise BadInput(f"srft: the chat template renders the prompt of {row['id']!r} "
                           "differently once an answer follows; its demonstration cannot be "
                           "placed after the prompt")  # fmt: skip
        text = full[len(head) :].rstrip()
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # ------------------------------------------------------------ the step

    def prepare(self, b: dict, entropy: float) -> dict:
        """Scale the batch's RL weights and add the SFT weights for policy entropy `entropy`."""
        w_sft, w_rl = entropy_weights(entropy, self.args)
        demo = b["demo"]
        positive = (b["adv"] > 0) & ~demo
        b["weights"] = b["weights"] * torch.where(positive, w_rl, 1.0)[:, None]
        present = (torch.arange(b["tokens"].shape[1])[None, :] < b["lengths"][:, None]).float()
        demo_tokens = present * demo[:, None]
        b["sft_weights"] = demo_tokens / demo_tokens.sum().clamp(min=1.0) * w_sft
        b["sft_tokens"] = demo_tokens
        rewards = b["rewards"][demo]
        return {
            "srft/entropy": entropy,
            "srft/w_sft": w_sft,
            "srft/w_rl": w_rl,
            "srft/demos": int(demo.sum()),
            "srft/demo_reward": rewards.mean().item() if len(rewards) else None,
        }

    @staticmethod
    def behaviour_logprobs(old: torch.Tensor, b: dict, rows: slice) -> torch.Tensor:
        """Old log-probs with a demonstration's set to 0: its behaviour policy is 1."""
        return torch.where(b["demo"][rows][:, None], torch.zeros_like(old), old)

    @staticmethod
    def sft_loss(logits: torch.Tensor, b: dict, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """(w_sft x token-mean NLL of the demonstrations in `rows`, their summed NLL in nats),
        both on the logits' device."""
        dev = logits.device
        logp = torch.log_softmax(logits, dim=-1)
        nll = -logp.gather(-1, b["tokens"][rows].to(dev).unsqueeze(-1)).squeeze(-1)
        nats = (nll.detach() * b["sft_tokens"][rows].to(dev)).sum()
        return (nll * b["sft_weights"][rows].to(dev)).sum(), nats
