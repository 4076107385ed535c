"""The embedded default end to end: `recipes/tiny/pipeline.sh smoke` runs all ten stages,
publishes every artifact, writes the report, and asserts the improvements that hold
robustly at this size. A second run must be all cache hits."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmforge import artifact

ROOT = Path(__file__).resolve().parent.parent
STAGE_DIRS = (
    "tokens-raw",
    "corpus",
    "tokens",
    "mixture",
    "base",
    "mid",
    "long",
    "sft",
    "dpo",
    "rl",
    "eval-base",
    "eval-chat",
    "eval-rl",
    "report",
)


def run_pipeline(out: Path) -> subprocess.CompletedProcess:
    venv_bin = str(Path(sys.executable).parent)  # the pipeline calls `llmforge` and `python`
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
    }
    return subprocess.run(
        ["bash", str(ROOT / "recipes/tiny/pipeline.sh"), "smoke", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )


@pytest.mark.slow
def test_smoke_demo_runs_all_stages_and_moves_the_numbers(tmp_path):
    out = tmp_path / "demo"
    first = run_pipeline(out)
    assert first.returncode == 0, first.stderr[-4000:]
    assert first.stdout.strip().endswith(str(out / "report"))
    for name in STAGE_DIRS:
        assert artifact.verify(out / name) == [], name
    stages = [artifact.read_manifest(out / n)["stage"] for n in STAGE_DIRS]
    for stage in (
        "tokenize",
        "dedup",
        "regmix",
        "pretrain",
        "midtrain",
        "context-extend",
        "sft",
        "dpo",
        "rlvr",
        "eval",
    ):
        assert stage in stages
    # lineage of the final model reaches back to the raw files through every stage
    tree = json.dumps(artifact.lineage(out / "rl"))
    for stage in ("dpo", "sft", "context-extend", "midtrain", "pretrain", "regmix", "dedup"):
        assert f'"stage": "{stage}"' in tree, stage

    report = artifact.read_manifest(out / "report")["metrics"]["pipeline"]
    verdicts = {key.split(" (")[0]: cells for key, cells in report.items()}
    # robust at this size: planted duplicates all go, pretraining lowers validation loss, and
    # SFT lowers held-out assistant loss and teaches the think format. (DPO's and RLVR's gains
    # are within noise at smoke size; the report states them either way.)
    assert verdicts["dedup: planted duplicates removed"][2] == "yes"
    assert verdicts["pretrain: validation loss"][2] == "yes"
    assert "dpo: held-out preference accuracy" in verdicts
    sft = artifact.read_manifest(out / "sft")["metrics"]
    assert sft["heldout_loss_after"] < sft["heldout_loss_before"]
    assert sft["format_after"]["think"] > sft["format_before"]["think"]
    html = (out / "report" / "report" / "report.html").read_text()
    assert "did each stage move its number" in html and "data:image/png;base64" in html
    # the RL run is plotted step by step: reward, accuracy and response length
    assert "rl_curves" in artifact.read_manifest(out / "report")["metrics"]["report_plots"]

    again = run_pipeline(out)
    assert again.returncode == 0, again.stderr[-4000:]
    # the evals that run alongside rlvr log to a file of their own
    alongside = (out / "evals-before-rl.log").read_text()
    assert (again.stderr + alongside).count("cache hit") == len(STAGE_DIRS)
