"""Task files: valid rows load with defaults, malformed files fail naming file and line."""

import json

import pytest

from llmforge.errors import BadInput
from llmforge.eval import tasks

GOOD = {"id": "a", "prompt": "What is 2 + 2?", "reference": "4", "verifier": "math"}


def write(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_jsonl_defaults_filled(tmp_path):
    (row,) = tasks.load_task_file(write(tmp_path / "t.jsonl", [GOOD])).rows
    assert row["chat"] is False and row["tests"] is None and row["id"] == "a"


@pytest.mark.parametrize(
    "bad, line, words",
    [
        ("{not json", 2, "malformed JSON"),
        ({**GOOD, "id": "b", "verifier": "magic"}, 2, "'verifier' must be one of"),
        ({"id": "b", "prompt": "x", "verifier": "math"}, 2, "needs a 'reference'"),
        ({"id": "b", "prompt": "x", "verifier": "code"}, 2, "needs 'tests'"),
        ({"id": "b", "prompt": 3, "reference": "1", "verifier": "exact"}, 2, "'prompt' must be"),
        ({**GOOD, "id": "b", "chat": "yes"}, 2, "'chat' must be true or false"),
        (
            {"id": "b", "prompt": "x", "verifier": "format", "reference": "maybe"},
            2,
            "'format' task",
        ),
        (GOOD, 2, "duplicate id 'a' (first on line 1)"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, bad, line, words):
    path = write(tmp_path / "t.jsonl", [GOOD, bad])
    with pytest.raises(BadInput) as err:
        tasks.load_task_file(path)
    assert f"{path}:{line}:" in str(err.value) and words in str(err.value)


def test_yaml_spec_defaults_limit_and_name(tmp_path):
    write(
        tmp_path / "items.jsonl",
        [{"id": i, "prompt": f"q{i}", "reference": str(i)} for i in range(5)],
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: sums\ndata: items.jsonl\nverifier: numeric\nchat: true\nlimit: 3\n")
    task = tasks.load_task_file(spec)
    assert task.name == "sums" and len(task.rows) == 3
    assert all(r["verifier"] == "numeric" and r["chat"] for r in task.rows)


def test_yaml_row_overrides_default(tmp_path):
    write(tmp_path / "items.jsonl", [{**GOOD, "verifier": "exact"}])
    (tmp_path / "s.yaml").write_text("data: items.jsonl\nverifier: numeric\n")
    assert tasks.load_task_file(tmp_path / "s.yaml").rows[0]["verifier"] == "exact"


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("data: items.jsonl\nverifer: math\n", 2, "unknown key 'verifer'"),
        ("verifier: math\n", None, "'data' (the task jsonl) is required"),
        ("name: x\ndata: nowhere.jsonl\n", 2, "not found"),
        ("data: items.jsonl\nlimit: -1\n", 2, "'limit' must be a positive integer"),
        ("data: [unclosed\n", 2, "invalid YAML"),
    ],
)
def test_malformed_yaml(tmp_path, text, line, words):
    write(tmp_path / "items.jsonl", [GOOD])
    spec = tmp_path / "s.yaml"
    spec.write_text(text)
    with pytest.raises(BadInput) as err:
        tasks.load_task_file(spec)
    where = f"{spec}:{line}:" if line else f"{spec}:"
    assert str(err.value).startswith(where) and words in str(err.value)


def test_builtins():
    arith = tasks.builtin("arithmetic", 6, difficulty=1)
    assert len(arith.rows) == 6 and {r["verifier"] for r in arith.rows} == {"math"}
    assert len({r["id"] for r in arith.rows}) == 6
    fmt = tasks.builtin("format", 4)
    assert [r["mode"] for r in fmt.rows] == ["think", "no_think", "think", "no_think"]
    he = tasks.builtin("humaneval", 3)
    assert [r["id"] for r in he.rows] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert all(r["verifier"] == "code" and "def check" in r["tests"] for r in he.rows)
    assert len(tasks.builtin("humaneval", 0).rows) == 164
    with pytest.raises(BadInput, match="unknown built-in"):
        tasks.builtin("gsm8k", 3)
