"""The data formats users bring, turned into llmforge's chat and preference rows.

Chat (sft) rows come as any of:

- `messages`: `[{"role", "content"}, ...]` (OpenAI / TRL conversational);
- ShareGPT `conversations`: `[{"from": "human" | "gpt" | ..., "value"}, ...]`;
- `prompt` + `completion`: both strings (TRL's standard prompt-completion: plain text, no
  chat template, loss on the completion) or message lists (conversational).

Preference (dpo) rows are `prompt`/`chosen`/`rejected`, each a string or a message list,
including TRL's implicit-prompt form where `chosen` and `rejected` are whole conversations
that share their prompt turns; unpaired KTO rows are `prompt`/`completion`/`label`.

A field map (`fields` in the sft and dpo configs) names the user's own columns for
llmforge's fields, e.g. `{prompt: question, chosen: good, content: text}`; it applies to
row columns and to message keys alike. Errors name the file, the line and the user's own
field name.
"""

from __future__ import annotations

from collections.abc import Mapping

from llmforge.errors import BadInput

ROW_FIELDS = ("messages", "conversations", "prompt", "completion", "chosen", "rejected",
              "label", "id", "mode")  # fmt: skip
MESSAGE_FIELDS = ("role", "content", "reasoning")
FIELDS = ROW_FIELDS + MESSAGE_FIELDS
ROLE_ALIASES = {
    "system": "system", "user": "user", "human": "user", "assistant": "assistant",
    "gpt": "assistant", "chatgpt": "assistant", "model": "assistant",
    "tool": "tool", "function": "tool", "observation": "tool", "ipython": "tool",
}  # fmt: skip


class Where:
    """The file, line and field map of the row being read, for error messages."""

    def __init__(self, path: str, line: int, fields: Mapping[str, str]):
        self.path, self.line, self.fields = path, line, dict(fields)

    def name(self, ours: str) -> str:
        """A field as the user's data names it, quoted: 'question' (fields.prompt)."""
        theirs = self.fields.get(ours)
        return f"'{theirs}' (fields.{ours})" if theirs else f"'{ours}'"

    def column(self, ours: str) -> str:
        return self.fields.get(ours, ours)

    def fail(self, message: str) -> BadInput:
        return BadInput(message, path=self.path, line=self.line)


def rename(row: Mapping, where: Where) -> dict:
    """The row with the user's column names replaced by ours."""
    out = dict(row)
    for ours, theirs in where.fields.items():
        if ours in ROW_FIELDS and theirs in out:
            out[ours] = out.pop(theirs)
    return out


def messages(value, key: str, where: Where) -> list[dict]:
    """A message list (role/content, ShareGPT from/value or mapped keys) in our form."""
    if not isinstance(value, list):
        raise where.fail(f"{where.name(key)} must be a list of messages")
    role_key, content_key = where.fields.get("role"), where.fields.get("content")
    reasoning_key = where.fields.get("reasoning", "reasoning")
    out = []
    for j, m in enumerate(value):
        at = f"{where.column(key)}[{j}]"
        if not isinstance(m, Mapping):
            raise where.fail(f"{at} must be an object with a role and a content")
        role = m.get(role_key) if role_key else m.get("role", m.get("from"))
        if role not in ROLE_ALIASES:
            name = role_key or ("from" if "from" in m else "role")
            raise where.fail(f"{at}.{name} must be one of {list(ROLE_ALIASES)}, got {role!r}")
        content = m.get(content_key) if content_key else m.get("content", m.get("value"))
        msg = {"role": ROLE_ALIASES[role], "content": content}
        for extra in ("tool_calls", "name"):
            if m.get(extra) is not None:
                msg[extra] = m[extra]
        reasoning = m.get(reasoning_key, m.get("reasoning_content"))
        if reasoning is not None:
            msg["reasoning"] = reasoning
        out.append(msg)
    return out


def chat_row(row: Mapping, where: Where) -> dict:
    """An sft row: {"messages": [...]}, or {"prompt": str, "completion": str} (plain text)."""
    row = rename(row, where)
    key = "messages" if "messages" in row else "conversations"
    if key in row:
        rest = {k: v for k, v in row.items() if k != key}
        return {**rest, "messages": messages(row[key], key, where)}
    if "prompt" in row and "completion" in row:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, str) and isinstance(completion, str):
            return row
        turns = _turns(prompt, "prompt", "user", where)
        turns += _turns(completion, "completion", "assistant", where)
        rest = {k: v for k, v in row.items() if k not in ("prompt", "completion")}
        return {**rest, "messages": turns}
    wanted = ", ".join(where.name(k) for k in ("messages", "conversations"))
    raise where.fail(
        f"a chat row needs {wanted}, or {where.name('prompt')} and {where.name('completion')}; "
        f"map other column names with --set fields.messages=COLUMN (found {sorted(row)})"
    )


def preference_row(row: Mapping, where: Where) -> dict:
    """A dpo row with string completions: {prompt, chosen, rejected} or {prompt,
    completion, label}; message-list completions and implicit prompts are resolved."""
    row = rename(row, where)
    if "label" in row:
        return {**row, **_completions(row, ("completion",), where)}
    for key in ("chosen", "rejected"):
        if key not in row:
            raise where.fail(f"a preference row needs {where.name(key)}")
    return {**row, **_completions(row, ("chosen", "rejected"), where)}


def _completions(row: dict, keys: tuple[str, ...], where: Where) -> dict:
    conversational = [k for k in keys if isinstance(row.get(k), list)]
    if not conversational:
        return {}
    found = {k: messages(row[k], k, where) for k in keys}
    prompt = row.get("prompt")
    if not isinstance(prompt, list) and len(keys) == 2:
        prompt, found = _shared_prompt(found, where)  # TRL's implicit prompt
    elif isinstance(prompt, list):
        prompt = messages(prompt, "prompt", where)
    out = {"prompt": prompt}
    for key, turns in found.items():
        if len(turns) != 1 or turns[0]["role"] != "assistant":
            raise where.fail(
                f"{where.name(key)} must end in exactly one assistant turn after the prompt "
                f"(found {[t['role'] for t in turns]})"
            )
        out[key] = turns[0]["content"]
    return out


def _shared_prompt(found: dict[str, list[dict]], where: Where):
    """Split conversations that share their first turns into (prompt, completions)."""
    from trl.data_utils import extract_prompt

    split = extract_prompt({"chosen": found["chosen"], "rejected": found["rejected"]})
    if not split["prompt"]:
        raise where.fail(
            f"{where.name('chosen')} and {where.name('rejected')} share no prompt turns; "
            f"give {where.name('prompt')}"
        )
    return split["prompt"], {"chosen": split["chosen"], "rejected": split["rejected"]}


def _turns(value, key: str, role: str, where: Where) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return messages(value, key, where)


def check_fields(fields: Mapping[str, str]) -> None:
    """Config check of a field map: our names as keys, non-empty column names as values."""
    from llmforge.config import check

    for ours, theirs in fields.items():
        check(ours in FIELDS, f"fields.{ours}", f"unknown field; fields: {', '.join(FIELDS)}")
        check(bool(theirs), f"fields.{ours}", "needs a column name")
