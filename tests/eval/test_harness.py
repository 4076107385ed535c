"""The lm-eval bridge on a local multiple-choice task over a local jsonl (no hub)."""

import json

import pytest

from llmforge.errors import BadInput
from llmforge.eval.harness import HarnessConfig, run_harness
from tests.conftest import write_jsonl

TASK_YAML = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: mc.jsonl
output_type: multiple_choice
test_split: test
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture
def task_dir(tmp_path):
    write_jsonl(
        tmp_path / "mc.jsonl",
        [
            {"question": "the king and the", "choices": [" queen", " sword"], "answer": 0},
            {"question": "def f(x):\n    return x +", "choices": [" 1", " king"], "answer": 0},
            {"question": "thou art", "choices": [" fair", " def"], "answer": 1},
        ],
    )
    (tmp_path / "tiny_mc.yaml").write_text(TASK_YAML)
    return tmp_path


def test_local_multiple_choice_task(task_dir, tiny_model, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    results, samples = run_harness(
        tiny_model, HarnessConfig(tasks=("tiny_mc",), batch_size=2), task_dir
    )
    assert set(results["tiny_mc"]) >= {"acc", "acc_stderr"}
    rows = samples["tiny_mc"]
    assert [r["doc_id"] for r in rows] == [0, 1, 2]
    assert results["tiny_mc"]["acc"] == pytest.approx(sum(r["metrics"]["acc"] for r in rows) / 3)
    json.dumps(rows)  # stored as jsonl: must be JSON-able


def test_unknown_task_is_bad_input(task_dir, tiny_model):
    with pytest.raises(BadInput, match="does not know task"):
        run_harness(tiny_model, HarnessConfig(tasks=("no_such_task",)), task_dir)
