"""The eval stage end to end: decontamination through lineage, HumanEval, report, bad input."""

import base64
import json

import pytest
from typer.testing import CliRunner

from llmforge import artifact, sandbox
from llmforge.errors import BadInput, ConfigError
from llmforge.stage import execute
from stages.app import app
from stages.eval import STAGE
from tests.conftest import write_jsonl
from tests.eval.helpers import publish_model_from

PLANTED = (
    "Hana has 34 marbles and gives away 12. Then Hana finds 7 more. "
    "How many marbles does Hana have now?"
)
CLEAN = "Jon has 5 crates with 6 eggs in each. Then Jon loses 4. How many eggs does Jon have now?"
FAST = ["sampling.n=2", "sampling.k=[1,2]", "sampling.max_new_tokens=6", "report=false"]


@pytest.fixture(scope="module")
def lineage_model(tmp_path_factory, tiny_model, tiny_tokenizer_dir):
    """tokenize(corpus with a planted eval item) -> model whose manifest input is the tokens."""
    root = tmp_path_factory.mktemp("planted")
    math = [
        {"id": f"m{i}", "text": f"{i} + {i} = {2 * i}. The answer is {2 * i}."} for i in range(30)
    ]
    math[7]["text"] = "Practice problem.\n" + PLANTED + "\nSolution: 29."
    lit = [
        {"id": f"l{i}", "text": "the king and the queen walk in the night " * 3} for i in range(30)
    ]
    tokens = execute(
        STAGE_TOKENIZE(),
        [
            f"math={write_jsonl(root / 'math.jsonl', math)}",
            f"literature={write_jsonl(root / 'lit.jsonl', lit)}",
            f"tokenizer={tiny_tokenizer_dir}",
        ],
        sets=["val_fraction=0.2"],
        out=root / "tokens",
    )
    model = publish_model_from(tiny_model, root / "model", [tokens])
    tasks = write_jsonl(
        root / "eval.jsonl",
        [
            {
                "id": "planted",
                "prompt": PLANTED,
                "reference": "29",
                "verifier": "math",
                "chat": True,
            },
            {"id": "clean", "prompt": CLEAN, "reference": "26", "verifier": "math", "chat": True},
        ],
    )
    return model, tokens, tasks


def STAGE_TOKENIZE():
    from stages.tokenize import STAGE as tokenize

    return tokenize


def test_decontamination_through_lineage(tmp_path, lineage_model):
    model, tokens, tasks = lineage_model
    out = execute(
        STAGE,
        [str(model), f"tokens={tokens}", f"task={tasks}"],
        sets=[*FAST, "loss.max_tokens=300"],
        out=tmp_path / "eval",
    )
    manifest = artifact.read_manifest(out)
    assert manifest["kind"] == "eval" and not artifact.verify(out)
    entry = json.loads((out / "results.json").read_text())["models"]["model-pretrain"]
    flagged = entry["contamination"]["contaminated"]["eval"]
    assert list(flagged) == ["planted"] and flagged["planted"]["doc"] == "m7"
    assert flagged["planted"]["source"].endswith("math.jsonl")
    # 30 math + 30 literature documents; the tokenizer input's own corpus is not scanned
    assert entry["contamination"]["documents_scanned"] == 60
    scores = entry["tasks"]["eval"]
    assert scores["contaminated_items"] == ["planted"] and scores["clean"]["problems"] == 1
    assert set(entry["loss"]["per_domain"]) == {"math", "literature"}
    assert manifest["metrics"]["model-pretrain/contaminated"] == 1
    rows = (out / "samples" / "model-pretrain" / "eval.jsonl").read_text().splitlines()
    assert len(rows) == 4 and {json.loads(r)["id"] for r in rows} == {"planted", "clean"}


def test_humaneval_end_to_end(tmp_path, tiny_model):
    out = execute(
        STAGE,
        [str(tiny_model)],
        out=tmp_path / "he",
        sets=[*FAST, "tasks=[humaneval]", "builtin.humaneval_n=2"],
    )
    entry = json.loads((out / "results.json").read_text())["models"]["model-init"]
    scores = entry["tasks"]["humaneval"]["all"]
    assert scores["problems"] == 2 and scores["samples_per_problem"] == 2
    assert 0.0 <= scores["pass@2"] <= 1.0
    lines = (out / "samples" / "model-init" / "humaneval.jsonl").read_text().splitlines()
    assert {json.loads(x)["id"] for x in lines} == {"HumanEval/0", "HumanEval/1"}
    assert artifact.read_manifest(out)["metrics"]["sandbox"] == sandbox.isolation()


def test_compare_report_renders(tmp_path, tiny_model):
    ev = execute(
        STAGE,
        [str(tiny_model)],
        out=tmp_path / "ev",
        sets=[
            "tasks=[arithmetic,long_context]",
            "builtin.arithmetic_n=2",
            "sampling.n=1",
            "sampling.max_new_tokens=4",
            "long_context.lengths=[32,64]",
            "long_context.trials=1",
            "long_context.depths=[0.5]",
            "report=false",
        ],
    )
    rep = execute(STAGE, [f"compare={tiny_model}", f"compare={ev}"], out=tmp_path / "rep")
    assert json.loads((rep / "results.json").read_text())["models"] == {}
    assert sorted(artifact.read_manifest(rep)["metrics"]["report_plots"]) == ["context", "scores"]
    page = (rep / "report" / "report.html").read_text()
    png = (rep / "report" / "context.png").read_bytes()
    assert base64.b64encode(png).decode() in page and "<td>model-init</td>" in page
    summary = (rep / "report" / "summary.md").read_text()
    assert "arithmetic" in summary and "passkey acc / rank" in summary


def test_harness_results_stored_in_eval_artifact(tmp_path, tiny_model, monkeypatch):
    from tests.eval.test_harness import TASK_YAML

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tasks = tmp_path / "lm_tasks"
    write_jsonl(
        tasks / "mc.jsonl", [{"question": "the king", "choices": [" a", " b"], "answer": 0}]
    )
    (tasks / "tiny_mc.yaml").write_text(TASK_YAML)
    out = execute(
        STAGE,
        [str(tiny_model), f"harness={tasks}"],
        out=tmp_path / "ev",
        sets=["harness.tasks=[tiny_mc]", "harness.batch_size=2"],
    )
    entry = json.loads((out / "results.json").read_text())["models"]["model-init"]
    assert entry["harness"]["tiny_mc"]["acc"] in (0.0, 1.0)
    (row,) = (out / "samples" / "model-init" / "harness_tiny_mc.jsonl").read_text().splitlines()
    assert json.loads(row)["doc"]["question"] == "the king"
    assert "lm-eval tiny_mc" in (out / "report" / "summary.md").read_text()


def test_bad_task_file_exits_2_and_writes_nothing(tmp_path, tiny_model):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "prompt": "x", "reference": "1", "verifier": "math"}\n'
        '{"id": "b", "prompt": "x", "verifier": "math"}\n'
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", str(tiny_model), f"task={bad}", "-o", str(out), "-q"])
    assert result.exit_code == 2 and result.stdout == ""
    assert not out.exists() and not out.with_name("out.partial").exists()
    with pytest.raises(BadInput, match=f"{bad}:2: a 'math' task needs a 'reference'"):
        execute(STAGE, [str(tiny_model), f"task={bad}"], out=out)


def test_config_and_input_errors(tmp_path, tiny_model):
    with pytest.raises(ConfigError, match="unknown task 'gsm8k'"):
        execute(STAGE, [str(tiny_model)], sets=["tasks=[gsm8k]"], out=tmp_path / "a")
    with pytest.raises(ConfigError, match="temperature"):
        execute(STAGE, [str(tiny_model)], sets=["sampling.temperature=0"], out=tmp_path / "b")
    with pytest.raises(BadInput, match="nothing to evaluate"):
        execute(STAGE, [str(tiny_model)], out=tmp_path / "c")
    with pytest.raises(BadInput, match="needs a model input"):
        execute(STAGE, [], out=tmp_path / "d")
