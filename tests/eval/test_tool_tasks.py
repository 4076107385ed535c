"""The multi-turn tool task type of eval: rows with `tools: ["python"]` are answered with the
sandboxed tool, scored on the model's final answer, and recorded with their turns."""

import json

import pytest

from llmforge.errors import BadInput
from llmforge.eval.generative import Sampling, run_task, task_metrics
from llmforge.eval.tasks import TaskSet, check_row, read_task_yaml
from tests.gen.scripted_policy import Scripted


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


def calls_then_boxes(prompt: str) -> str:
    """Calls the tool for the product, then boxes what it printed; boxes 0 without a tool."""
    if '"name": "python"' not in prompt:  # no tool listed in the system turn
        return "\\boxed{0}"
    if "<|im_start|>tool" not in prompt:
        body = json.dumps({"name": "python", "arguments": {"code": "print(6 * 7)"}})
        return f"<tool_call>\n{body}\n</tool_call>"
    out = prompt.rsplit("<|im_start|>tool\n", 1)[1].split("<|im_end|>", 1)[0]
    return f"\\boxed{{{out}}}"


def test_tool_rows_run_multi_turn_and_score_the_final_answer(tokenizer):
    rows = [
        check_row({"id": "with", "prompt": "6 * 7?", "reference": "42", "verifier": "math",
                   "chat": True, "tools": ["python"]}, "t.jsonl", 1),
        check_row({"id": "without", "prompt": "6 * 7?", "reference": "42", "verifier": "math",
                   "chat": True}, "t.jsonl", 2),
    ]  # fmt: skip
    result = run_task(Scripted(tokenizer, calls_then_boxes), TaskSet("t", rows, "t"), Sampling(n=2))
    assert result.verdicts == {"with": [True, True], "without": [False, False]}
    tool = [r for r in result.records if r["id"] == "with"]
    assert all(r["turns"] == 2 and r["tool_calls"] == 1 and r["tool_errors"] == 0 for r in tool)
    assert tool[0]["transcript"][1] == {"role": "tool", "content": "42"}
    assert not any("turns" in r for r in result.records if r["id"] == "without")
    metrics = task_metrics(result, ks=(1,))
    assert metrics["tools"] == {"turns": 2.0, "calls": 1.0, "error_frac": 0.0}


def test_tools_field_is_checked(tmp_path):
    with pytest.raises(BadInput, match="field 'tools'") as err:
        check_row({"id": "a", "prompt": "x", "reference": "1", "verifier": "math",
                   "tools": ["bash"]}, "t.jsonl", 3)  # fmt: skip
    assert err.value.line == 3
    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps({"id": "a", "prompt": "x", "reference": "1"}) + "\n")
    spec = tmp_path / "task.yaml"
    spec.write_text("data: items.jsonl\nverifier: math\nchat: true\ntools: [python]\n")
    assert read_task_yaml(spec).rows[0]["tools"] == ["python"]
