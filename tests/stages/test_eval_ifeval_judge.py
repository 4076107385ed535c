"""The eval stage on the new verifiers: the `ifeval` built-in scores each sample with the
instruction-following verifier, and `judge` task rows are graded by a judge= model (a tiny
judge fine-tuned for the test), or refused without one before any work."""

import json

import pytest

from llmforge.errors import BadInput
from llmforge.stage import execute
from llmforge.verifiers import build
from stages.eval import STAGE
from tests.conftest import write_jsonl

FAST = ["sampling.n=2", "sampling.max_new_tokens=12", "report=false", "answer_bpb=false",
        "decontam.enabled=false"]  # fmt: skip


def samples(out, task):
    (label,) = json.loads((out / "results.json").read_text())["models"]
    lines = (out / "samples" / label / f"{task}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_ifeval_builtin_scores_samples_with_the_verifier(tiny_model, tmp_path):
    from llmforge.eval.tasks import builtin

    sets = FAST + ["tasks=[ifeval]", "builtin.ifeval_n=6"]
    out = execute(STAGE, [str(tiny_model)], sets=sets, out=tmp_path / "e")
    results = json.loads((out / "results.json").read_text())
    (entry,) = results["models"].values()
    metrics = entry["tasks"]["ifeval"]
    assert metrics["all"]["problems"] == 6 and metrics["parseable_rate"] == 1.0
    rows = {r["id"]: r for r in builtin("ifeval", 6).rows}
    records = samples(out, "ifeval")
    assert len(records) == 12
    for rec in records:  # every recorded verdict is the ifeval verifier's on that completion
        score = build("ifeval")(rec["completion"], rows[rec["id"]])
        assert rec["score"] == score.value and rec["correct"] == (score.value == 1.0)
    assert metrics["mean_score"] == pytest.approx(sum(r["score"] for r in records) / 12)
    assert metrics["all"]["avg@2"] <= metrics["mean_score"]


@pytest.fixture(scope="module")
def judge_model(tmp_path_factory, tiny_model):
    from tests.verifiers.yes_no_judge import publish_yes_no_judge

    return publish_yes_no_judge(tmp_path_factory.mktemp("judge") / "judge", tiny_model)


@pytest.fixture
def judged_tasks(tmp_path):
    rows = [{"id": f"j{i}", "prompt": f"Is {w} good?", "verifier": "judge", "chat": True}
            for i, w in enumerate(["rain", "war", "art"])]  # fmt: skip
    return write_jsonl(tmp_path / "judged.jsonl", rows)


def test_judge_rows_are_graded_by_the_judge_model(tiny_model, judge_model, judged_tasks, tmp_path):
    from tests.verifiers.yes_no_judge import RUBRIC

    sets = FAST + [f"judge.rubric={RUBRIC!r}", "judge.max_new_tokens=8"]
    args = [str(tiny_model), f"task={judged_tasks}", f"judge={judge_model}"]
    out = execute(STAGE, args, sets=sets, out=tmp_path / "j")
    metrics = json.loads((out / "results.json").read_text())["models"].popitem()[1]["tasks"]
    assert metrics["judged"]["parseable_rate"] == 1.0
    for rec in samples(out, "judged"):  # the judge says 9/10 for "yes", 1/10 otherwise
        has_yes = "yes" in rec["completion"].split()
        assert rec["score"] == pytest.approx(0.9 if has_yes else 0.1)
    manifest = json.loads((out / "manifest.json").read_text())
    assert "judge" in [i["role"] for i in manifest["inputs"]]


def test_judge_rows_without_a_judge_exit_2(tiny_model, judged_tasks, tmp_path):
    with pytest.raises(BadInput, match="'judge' rows: give the judge model as judge=PATH"):
        execute(STAGE, [str(tiny_model), f"task={judged_tasks}"], sets=FAST, out=tmp_path / "n")
    assert not (tmp_path / "n").exists() and not (tmp_path / "n.partial").exists()
