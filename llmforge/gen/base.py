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
    when `finish_reason == "stop"`, and `text` never contains it. `mask[i]` is 1 where the
    model sampled `token_ids[i]` and 0 where something else wrote it (a tool's output in a
    multi-turn rollout, `llmforge.gen.tools`); None means the model wrote every token.
    """

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: Literal["stop", "length"]
    prompt_token_ids: list[int] = field(default_factory=list)
    mask: list[int] | None = None


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

    def generate_ids(
        self,
        prompt_ids: Sequence[list[int]],
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        seed: int = 0,
    ) -> list[list[Completion]]:
        """As `generate`, from prompts already tokenised: a multi-turn rollout continues a
        conversation from its token ids so no text round trip can change a sampled token."""
        ...


def generate_in_modes(generator: Generator, prompts: Sequence[Prompt],
                      modes: Sequence[str | None], **sampling) -> list[list[Completion]]:  # fmt: skip
    """`generator.generate` for prompts that each ask for a think mode ("think", "no_think"
    or None for the template's default), in input order.

    The mode is a chat-template argument (`enable_thinking`), one per generate call, so the
    prompts are grouped by mode and the generator's `template_kwargs` set for each group.
    """
    out: list[list[Completion] | None] = [None] * len(prompts)
    groups: dict[str | None, list[int]] = {}
    for i, mode in enumerate(modes):
        groups.setdefault(mode, []).append(i)
    base = dict(getattr(generator, "template_kwargs", {}) or {})
    try:
        for mode, idx in groups.items():
            if hasattr(generator, "template_kwargs"):
                generator.template_kwargs = {**base, **mode_kwargs(mode)}
            got = generator.generate([prompts[i] for i in idx], **sampling)
            for i, completions in zip(idx, got, strict=True):
                out[i] = completions
    finally:
        if hasattr(generator, "template_kwargs"):
            generator.template_kwargs = base
    return out  # type: ignore[return-value]


def mode_kwargs(mode: str | None) -> dict:
    """The chat-template argument that asks for a think mode (none for the default)."""
    return {} if mode is None else {"enable_thinking": mode == "think"}


def render_prompt(tokenizer, prompt: Prompt, **template_kwargs) -> str:
    """A message list through the tokenizer's chat template (with the generation prompt).

    A base model with no chat template gets the turns' contents as plain text, as lm-eval
    prompts base models."""
    if isinstance(prompt, str):
        return prompt
    if not has_chat_template(tokenizer):
        return "\n\n".join(m.get("content") or "" for m in prompt)
    return tokenizer.apply_chat_template(
        list(prompt), add_generation_prompt=True, tokenize=False, **template_kwargs
    )


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def encode_prompt(tokenizer, prompt: Prompt, **template_kwargs) -> list[int]:
    """Token ids of one prompt; a prompt rendered by a chat template carries its own special
    tokens (a tokenizer without a template gets the messages as plain text, and its own)."""
    text = render_prompt(tokenizer, prompt, **template_kwargs)
    chat = not isinstance(prompt, str) and has_chat_template(tokenizer)
    return tokenizer(text, add_special_tokens=not chat)["input_ids"]


def to_completion(tokenizer, tokens: list[int], logprobs: list[float], stop_ids,
                  prompt_ids: list[int]) -> Completion:  # fmt: skip
    """A `Completion` from sampled ids: cut after the first stop token, text without it."""
    stop_at = next((i for i, t in enumerate(tokens) if t in stop_ids), None)
    if stop_at is None:
        kept, reason, text_ids = tokens, "length", tokens
    else:
        kept, reason, text_ids = tokens[: stop_at + 1], "stop", tokens[:stop_at]
    text = tokenizer.decode(text_ids, skip_special_tokens=False)
    return Completion(text, list(kept), list(logprobs[: len(kept)]), reason, list(prompt_ids))


def stop_token_ids(tokenizer, extra: Sequence[str] = STOP_TOKENS) -> list[int]:
    """eos plus the ids of `extra` stop tokens the vocabulary has."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in extra if t in vocab and vocab[t] not in ids]
    return ids
