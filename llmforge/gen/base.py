"""The generation interface every backend implements, and its result type."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Messages = Sequence[Mapping[str, str]]
Prompt = str | Messages
STOP_TOKENS = ("<|im_end|>",)


@dataclass(frozen=True)
class Completion:
    """One sampled continuation.

    `logprobs[i]` is the log-probability of `token_ids[i]` under the sampling distribution
    (logits / temperature, before top-p truncation); `token_ids` ends with the stop token
    when `finish_reason == "stop"`, and `text` never contains it.
    """

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: Literal["stop", "length"]
    prompt_token_ids: list[int] = field(default_factory=list)


class Generator(Protocol):
    """A sampling backend: `n` completions for each prompt (a string or a message list)."""

    def generate(
        self,
        prompts: Sequence[Prompt],
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        seed: int = 0,
    ) -> list[list[Completion]]: ...


def render_prompt(tokenizer, prompt: Prompt, **template_kwargs) -> str:
    """A message list through the tokenizer's chat template (with the generation prompt)."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(
        list(prompt), add_generation_prompt=True, tokenize=False, **template_kwargs
    )


def stop_token_ids(tokenizer, extra: Sequence[str] = STOP_TOKENS) -> list[int]:
    """eos plus the ids of `extra` stop tokens the vocabulary has."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in extra if t in vocab and vocab[t] not in ids]
    return ids
