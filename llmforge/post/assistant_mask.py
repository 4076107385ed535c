"""Which tokens of a rendered conversation an assistant-only loss trains on.

Two ways, one result:

- the template marks its assistant output with `{% generation %}` ... `{% endgeneration %}`
  (llmforge's own template does): transformers returns those spans as `assistant_masks`;
- it does not (Qwen3's, Llama 3's, Mistral's and most others do not): the spans are found
  by prefix rendering. For assistant turn i, the turns before it rendered with the
  generation prompt are what the model is given at inference, so the turn starts where
  that text stops matching the whole conversation; it ends where the conversation up to
  and including it ends (or, for templates that re-render earlier turns once later ones
  follow, as Qwen3 drops old reasoning, after its content and the template's closing
  text). Trailing whitespace after a turn's end token is not trained.

Either way the tokens the generation prompt itself supplies are not trained: in no_think
mode that is the empty `<think>\\n\\n</think>\\n` block, which would otherwise teach the
model to skip its reasoning on prompts that look identical in both modes. Tokens overlapping
a span count as inside it, as in transformers.
"""

from __future__ import annotations

import os

from llmforge.errors import BadInput


def has_generation_markers(tokenizer) -> bool:
    from trl.chat_template_utils import has_generation_markers as marked

    template = tokenizer.chat_template
    return bool(template) and marked(template)


def by_markers(tokenizer, messages: list[dict], kwargs: dict) -> tuple[list[int], list[int]]:
    """(input_ids, mask) from the template's {% generation %} spans."""
    enc = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, **kwargs
    )
    ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    head = _ids(tokenizer, messages[:last], False, kwargs)
    head_gen = _ids(tokenizer, messages[:last], True, kwargs)
    if head_gen[: len(head)] == head:
        _unmask_prompt_suffix(ids, mask, head_gen[len(head) :])
    return ids, mask


def by_prefix(tokenizer, messages: list[dict], kwargs: dict) -> tuple[list[int], list[int]]:
    """(input_ids, mask) with each assistant turn located by prefix rendering."""
    if not getattr(tokenizer, "is_fast", False):
        raise BadInput("assistant-only loss without {% generation %} markers needs a fast "
                       "tokenizer (character offsets); set sft.loss_on=all")  # fmt: skip
    full = render(tokenizer, messages, False, kwargs)
    spans = [_span(tokenizer, messages, i, full, kwargs)
             for i, m in enumerate(messages) if m["role"] == "assistant"]  # fmt: skip
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(e > a and s < b for a, b in spans)) for s, e in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def _span(tokenizer, messages: list[dict], i: int, full: str, kwargs: dict) -> tuple[int, int]:
    before = render(tokenizer, messages[:i], False, kwargs) if i else ""
    if not full.startswith(before):
        raise BadInput(
            "the chat template renders earlier turns differently once later ones follow, so "
            "assistant turns cannot be found by prefix rendering; add {% generation %} markers "
            "to the template or set sft.loss_on=all"
        )
    head = render(tokenizer, messages[:i], True, kwargs) if i else ""
    start = len(os.path.commonprefix([full, head]))
    upto = render(tokenizer, messages[: i + 1], False, kwargs)
    if full.startswith(upto):
        end = len(upto)
    else:
        end = _end_by_content(full, upto, messages[i].get("content") or "", start)
    while end > start and full[end - 1].isspace():
        end -= 1
    return start, end


def _end_by_content(full: str, upto: str, content: str, start: int) -> int:
    """Where turn i ends in `full` when its rendering there differs from `upto`'s: after
    its content, plus as much of the template's closing text (`upto` after the content)."""
    pos = full.find(content, start) if content else -1
    if pos < 0 or upto.rfind(content) < 0:
        raise BadInput("cannot find an assistant turn's content in the rendered chat template "
                       "(it rewrites the content); set sft.loss_on=all")  # fmt: skip
    end = pos + len(content)
    closing = upto[upto.rfind(content) + len(content) :]
    return end + len(os.path.commonprefix([full[end:], closing]))


def render(tokenizer, messages: list[dict], generation_prompt: bool, kwargs: dict) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt, **kwargs
    )


def _unmask_prompt_suffix(ids: list[int], mask: list[int], suffix: list[int]) -> None:
    """Zero the mask over the generation-prompt tokens that open the last assistant span.

    The prompt is rendered separately because the template draws the think block only on
    the last assistant turn, so a shorter conversation is not a token prefix of the full
    one; the suffix is matched where the last masked span starts instead.
    """
    start = max((i for i, m in enumerate(mask) if m and (i == 0 or not mask[i - 1])), default=None)
    if start is None or not suffix:
        return
    for pos in range(max(0, start - len(suffix)), start + 1):
        if ids[pos : pos + len(suffix)] == suffix:
            end = pos + len(suffix)
            mask[start:end] = [0] * max(0, end - start)
            return


def _ids(tokenizer, messages: list[dict], generation_prompt: bool, kwargs: dict) -> list[int]:
    if not messages:
        return []
    return list(
        tokenizer.apply_chat_template(
            messages,
            tokenize=True,
            return_dict=True,
            add_generation_prompt=generation_prompt,
            **kwargs,
        )["input_ids"]
    )
