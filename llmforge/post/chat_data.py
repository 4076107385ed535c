"""Chat (SFT) and preference (DPO) data: loading, schema checks, mixing and the think budget.

Rows follow docs/contract.md; `chat_formats` turns the formats users bring (ShareGPT,
prompt/completion, TRL's conversational preference rows, other column names) into them.
Loading checks every row and names the file and line of the first bad one. Several sources are mixed by weight, and the weights may change per epoch
(Motif-2: a static uniform mix converges early and forgets), so the training stream is a
concatenation of per-epoch mixtures, each shuffled on its own. The Hermes 4 think budget
cuts each reasoning trace at N tokens; the chat template then closes it with `</think>`, so
the model learns to stop thinking when the budget runs out.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

from llmforge.data.rows import data_files, read_rows
from llmforge.errors import BadInput
from llmforge.post import assistant_mask, chat_formats

ROLES = ("system", "user", "assistant", "tool")
MODES = ("think", "no_think")


# ---------------------------------------------------------------- reading and schemas


def check_chat_row(row: Mapping, path: str, line: int) -> None:
    """Raise BadInput naming the field unless `row` follows the chat schema."""
    if "messages" not in row:
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise BadInput(f"'{key}' must be a non-empty string", path=path, line=line)
        return
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadInput("'messages' must be a non-empty list", path=path, line=line)
    for j, m in enumerate(messages):
        where = f"messages[{j}]"
        if not isinstance(m, Mapping) or m.get("role") not in ROLES:
            raise BadInput(f"{where}.role must be one of {list(ROLES)}", path=path, line=line)
        if not isinstance(m.get("content") or "", str):
            raise BadInput(f"{where}.content must be a string", path=path, line=line)
        if m.get("reasoning") is not None and m["role"] != "assistant":
            raise BadInput(
                f"{where}.reasoning is only allowed on assistant turns", path=path, line=line
            )
    if not any(m["role"] == "assistant" for m in messages):
        raise BadInput("a chat row needs at least one assistant turn", path=path, line=line)
    if row.get("mode") is not None and row["mode"] not in MODES:
        raise BadInput(f"'mode' must be one of {list(MODES)}", path=path, line=line)


def check_preference_row(row: Mapping, path: str, line: int) -> None:
    """Raise BadInput unless `row` is a paired (chosen/rejected) or unpaired (label) row."""
    prompt = row.get("prompt")
    if not isinstance(prompt, (str, list)) or not prompt:
        raise BadInput("'prompt' must be a string or a message list", path=path, line=line)
    if "label" in row:
        if not isinstance(row.get("completion"), str) or not isinstance(row["label"], bool):
            raise BadInput(
                "unpaired rows need 'completion' (str) and 'label' (bool)", path=path, line=line
            )
        return
    for key in ("chosen", "rejected"):
        if not isinstance(row.get(key), str):
            raise BadInput(f"'{key}' must be a string", path=path, line=line)


def load_source(path: Path, kind: str = "chat", fields: Mapping[str, str] | None = None):
    """Every row of a chat or preference source in any format of `chat_formats`, turned
    into our schema (with the field map applied) and checked."""
    normalize = chat_formats.chat_row if kind == "chat" else chat_formats.preference_row
    check = check_chat_row if kind == "chat" else check_preference_row
    rows = []
    for file in data_files(path):
        for row, line in read_rows(file):
            row = normalize(row, chat_formats.Where(str(file), line, fields or {}))
            check(row, str(file), line)
            rows.append(row)
    if not rows:
        raise BadInput(f"the source holds no {kind} rows", path=str(path))
    return rows


# ---------------------------------------------------------------- mixing


def weights_for_epoch(schedule: Mapping[str, Sequence[float]], epoch: int) -> dict[str, float]:
    """The per-source weights of `epoch` (0-based); a list shorter than the run repeats its last."""
    return {name: float(ws[min(epoch, len(ws) - 1)]) for name, ws in schedule.items()}


def mix_epoch(
    sources: Mapping[str, list[dict]], weights: Mapping[str, float], rng: random.Random, size: int
) -> list[dict]:
    """`size` rows drawn so each source's share matches its weight, shuffled.

    A source is used whole as often as its share allows, then topped up by a random subset,
    so up-weighting repeats rows and down-weighting drops some (sampling without replacement
    inside each pass keeps the repetition even).
    """
    total = sum(weights.values())
    if total <= 0:
        raise BadInput("the mixture weights of an epoch sum to 0")
    rows: list[dict] = []
    for name, rows_of in sources.items():
        want = round(size * weights.get(name, 0.0) / total)
        full, rest = divmod(want, len(rows_of))
        rows += rows_of * full + rng.sample(rows_of, rest)
    rng.shuffle(rows)
    return rows


def mixed_stream(
    sources: Mapping[str, list[dict]],
    schedule: Mapping[str, Sequence[float]],
    epochs: int,
    seed: int,
) -> list[dict]:
    """The training rows of all epochs in order, each epoch mixed by its own weights.

    An epoch holds as many rows as all sources together (so equal weights over equal-sized
    sources is one plain pass over the data).
    """
    unknown = sorted(set(schedule) - set(sources))
    if unknown:
        raise BadInput(f"mix weights name unknown sources {unknown}; sources: {sorted(sources)}")
    size = sum(len(r) for r in sources.values())
    full = {name: schedule.get(name, (1.0,)) for name in sources}
    rng = random.Random(seed)
    return [
        row
        for e in range(epochs)
        for row in mix_epoch(sources, weights_for_epoch(full, e), rng, size)
    ]


# ---------------------------------------------------------------- think budget and TRL rows


def apply_think_budget(row: dict, tokenizer, budget: int) -> tuple[dict, bool]:
    """Cut each assistant reasoning trace to `budget` tokens; returns (row, was_cut).

    The template closes the reasoning with `</think>` right after the cut, which is the
    Hermes 4 recipe: the model sees the end-of-think marker where its budget ends.
    """
    if "messages" not in row:  # a plain-text prompt/completion row has no reasoning field
        return row, False
    cut = False
    messages = []
    for m in row["messages"]:
        reasoning = m.get("reasoning")
        if reasoning:
            ids = tokenizer(reasoning, add_special_tokens=False)["input_ids"]
            if len(ids) > budget:
                m = {**m, "reasoning": tokenizer.decode(ids[:budget]).rstrip()}
                cut = True
        messages.append(m)
    return {**row, "messages": messages}, cut


def to_trl_chat(row: Mapping) -> dict:
    """A TRL conversational row: messages plus the per-row `enable_thinking` flag."""
    messages = [_clean_message(m) for m in row["messages"]]
    mode = row.get("mode")
    # None leaves the choice to the template (a /think or /no_think system flag, else think).
    thinking = None if mode not in MODES else mode == "think"
    return {"messages": messages, "chat_template_kwargs": {"enable_thinking": thinking}}


def _clean_message(m: Mapping) -> dict:
    """One message with the same keys as every other (Arrow needs one schema per column).

    Tool calls are folded into the content the way the template renders them, because
    their free-form JSON objects do not fit a fixed Arrow schema.
    """
    content = m.get("content") or ""
    for call in m.get("tool_calls") or []:
        content += "<tool_call>\n" + json.dumps(call, ensure_ascii=False) + "\n</tool_call>"
    reasoning = m.get("reasoning") or ""
    # Both names: ours, and the one Qwen3's and DeepSeek's templates read.
    return {"role": m["role"], "content": content, "reasoning": reasoning,
            "reasoning_content": reasoning}  # fmt: skip


def tokenize_chat(row: Mapping, tokenizer, loss_on: str = "assistant") -> dict:
    """`input_ids` and (for an assistant-only loss) `assistant_masks` of one chat row.

    Message rows go through the model's chat template (see `assistant_mask` for how the
    assistant tokens are found with and without {% generation %} markers); plain-text
    prompt/completion rows are prompt + completion + eos with no template, as in TRL.
    """
    if "messages" not in row:
        return _tokenize_completion(row, tokenizer, loss_on)
    from jinja2 import TemplateError

    try:
        return _tokenize_messages(row, tokenizer, loss_on)
    except TemplateError as e:  # e.g. "Conversation roles must alternate user/assistant"
        raise BadInput(f"the model's chat template refuses row {row.get('id', '?')}: {e}") from None


def _tokenize_messages(row: Mapping, tokenizer, loss_on: str) -> dict:
    chat = to_trl_chat(row)
    messages = chat["messages"]
    kwargs = {k: v for k, v in chat["chat_template_kwargs"].items() if v is not None}
    if loss_on != "assistant":
        text = assistant_mask.render(tokenizer, messages, False, kwargs)
        return {"input_ids": tokenizer(text, add_special_tokens=False)["input_ids"]}
    if assistant_mask.has_generation_markers(tokenizer):
        ids, mask = assistant_mask.by_markers(tokenizer, messages, kwargs)
    else:
        ids, mask = assistant_mask.by_prefix(tokenizer, messages, kwargs)
    return {"input_ids": ids, "assistant_masks": mask}


def _tokenize_completion(row: Mapping, tokenizer, loss_on: str) -> dict:
    prompt = tokenizer(row["prompt"])["input_ids"]
    completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        completion.append(tokenizer.eos_token_id)
    ids = list(prompt) + list(completion)
    if loss_on != "assistant":
        return {"input_ids": ids}
    return {"input_ids": ids, "assistant_masks": [0] * len(prompt) + [1] * len(completion)}
