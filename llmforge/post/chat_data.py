"""Chat (SFT) and preference (DPO) data: loading, schema checks, mixing and the think budget.

Rows follow docs/contract.md. Loading checks every row and names the file and line of the
first bad one. Several sources are mixed by weight, and the weights may change per epoch
(Motif-2: a static uniform mix converges early and forgets), so the training stream is a
concatenation of per-epoch mixtures, each shuffled on its own. The Hermes 4 think budget
cuts each reasoning trace at N tokens; the chat template then closes it with `</think>`, so
the model learns to stop thinking when the budget runs out.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from llmforge import textfiles
from llmforge.data.sources import JSONL_SUFFIXES, parquet_batches
from llmforge.errors import BadInput

ROLES = ("system", "user", "assistant", "tool")
MODES = ("think", "no_think")
_SUFFIXES = (*JSONL_SUFFIXES, ".json", ".parquet")


# ---------------------------------------------------------------- reading files


def data_files(path: Path) -> list[Path]:
    """The jsonl/parquet files of a source: the file itself or those in a directory."""
    path = Path(path)
    if path.is_file():
        return [path]
    if (path / "documents").is_dir():  # a corpus-like artifact keeps its rows there
        path = path / "documents"
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(_SUFFIXES))
    if not files:
        raise BadInput("no .jsonl or .parquet files found", path=str(path))
    return files


def read_rows(path: Path) -> Iterator[tuple[dict, int]]:
    """(row, line) pairs of a jsonl (plain or compressed) or parquet file; parquet lines
    count rows from 1. Corrupt files and bad lines are BadInput (`llmforge.textfiles`)."""
    path = Path(path)
    if path.name.endswith(".parquet"):
        i = 0
        for cols in parquet_batches(path):
            for values in zip(*cols.values(), strict=True):
                i += 1
                yield dict(zip(cols, values, strict=True)), i
        return
    for i, row in textfiles.json_lines(path):
        yield row, i


# ---------------------------------------------------------------- schemas


def check_chat_row(row: Mapping, path: str, line: int) -> None:
    """Raise BadInput naming the field unless `row` follows the chat schema."""
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


def load_source(path: Path, kind: str = "chat") -> list[dict]:
    """Every row of a chat or preference source, checked against its schema."""
    check = check_chat_row if kind == "chat" else check_preference_row
    rows = []
    for file in data_files(path):
        for row, line in read_rows(file):
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
    return {"role": m["role"], "content": content, "reasoning": m.get("reasoning") or ""}


def tokenize_chat(row: Mapping, tokenizer, loss_on: str = "assistant") -> dict:
    """`input_ids` and (for an assistant-only loss) `assistant_masks` of one chat row.

    The template's {% generation %} spans mark the assistant tokens. On top of that, the
    tokens the generation prompt itself supplies at inference are not trained: in no_think
    mode that is the empty `<think>\\n\\n</think>\\n` block, which would otherwise teach the
    model, on prompts that look identical in both modes, to skip its reasoning.
    """
    chat = to_trl_chat(row)
    messages = chat["messages"]
    kwargs = {k: v for k, v in chat["chat_template_kwargs"].items() if v is not None}
    enc = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, **kwargs
    )
    ids = list(enc["input_ids"])
    if loss_on != "assistant":
        return {"input_ids": ids}
    mask = list(enc["assistant_masks"])
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    head = _ids(tokenizer, messages[:last], False, kwargs)
    head_gen = _ids(tokenizer, messages[:last], True, kwargs)
    if head_gen[: len(head)] == head:
        _unmask_prompt_suffix(ids, mask, head_gen[len(head) :])
    return {"input_ids": ids, "assistant_masks": mask}


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
