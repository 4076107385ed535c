"""RL prompt files: read and check the task/RL-prompt jsonl schema of docs/contract.md.

Each row: `{"id", "prompt": str | messages, "reference", "tests", "verifier", "chat",
"entry_point"}` and an optional `mode` ("think" | "no_think", the chat template's
`enable_thinking`). A chat row's prompt becomes a one-message user conversation.
"""

from __future__ import annotations

from pathlib import Path

from llmforge.data.rows import data_files, read_rows
from llmforge.errors import BadInput
from llmforge.verifiers.dispatch import VERIFIERS
from llmforge.verifiers.ifeval import constraints_error

MODES = (None, "think", "no_think")


def _check_row(row, path: str, line: int) -> dict:
    if not isinstance(row, dict):
        raise BadInput("each line must be a JSON object", path=path, line=line)
    prompt = row.get("prompt")
    if not (isinstance(prompt, str) and prompt) and not isinstance(prompt, list):
        raise BadInput(
            "'prompt' must be a non-empty string or a message list", path=path, line=line
        )
    verifier = row.get("verifier", "math")
    if verifier not in VERIFIERS:
        raise BadInput(
            f"'verifier' must be one of {VERIFIERS}, got {verifier!r}", path=path, line=line
        )
    if verifier == "judge":
        raise BadInput("rlvr has no judge model input yet; train on 'judge' rows with the dpo "
                       "stage's online mode (judge=MODEL)", path=path, line=line)  # fmt: skip
    if verifier == "code" and not row.get("tests"):
        raise BadInput("a code row needs 'tests'", path=path, line=line)
    if verifier in ("math", "exact", "numeric") and row.get("reference") is None:
        raise BadInput(f"a {verifier} row needs 'reference'", path=path, line=line)
    error = constraints_error(row.get("constraints")) if verifier == "ifeval" else None
    if error:
        raise BadInput(error, path=path, line=line)
    if row.get("mode") not in MODES:
        raise BadInput(f"'mode' must be think, no_think or absent, got {row['mode']!r}",
                       path=path, line=line)  # fmt: skip
    return {**row, "id": str(row.get("id", f"{Path(path).stem}-{line}")), "verifier": verifier}


def read_prompts(path: Path) -> list[dict]:
    """All rows of a jsonl or parquet file, a folder of them, or a `datasets` save_to_disk
    folder, checked."""
    rows = []
    for file in data_files(Path(path)):
        for row, line in read_rows(file):
            rows.append(_check_row(row, str(file), line))
    if not rows:
        raise BadInput("no RL prompts found", path=str(path))
    return rows


def assign_modes(rows: list[dict], modes: list[str]) -> list[dict]:
    """Give rows without a `mode` the modes in turn (row i gets modes[i % len(modes)]), so
    RL trains both halves of a hybrid reasoning model; empty `modes` leaves rows as they are."""
    if not modes:
        return rows
    return [row if row.get("mode") else {**row, "mode": modes[i % len(modes)]}
            for i, row in enumerate(rows)]  # fmt: skip


def as_prompt(row: dict, system: str | None = None):
    """What the generator gets: a message list for chat rows, the raw string otherwise."""
    prompt = row["prompt"]
    if isinstance(prompt, list):
        return prompt
    if not row.get("chat", True):
        return prompt
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": prompt}]
