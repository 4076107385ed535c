"""The artifact contract: ids, atomic publish under a kill, cache hits, conflicts, locks,
verify, wrong-kind inputs and lineage."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmforge import artifact, provenance
from llmforge.errors import BadInput
from llmforge.stage import Role, Stage, execute
from tests.slow_stage import SLOW

ROOT = Path(__file__).resolve().parent.parent


def start_slow(out: Path, seconds: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.slow_stage", str(out), str(seconds)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_id_is_deterministic_and_sensitive():
    a = artifact.compute_id("s", {"x": 1, "y": [1, 2]}, [("in", "abc")])
    assert a == artifact.compute_id("s", {"y": [1, 2], "x": 1}, [("in", "abc")])
    assert a != artifact.compute_id("s", {"x": 2, "y": [1, 2]}, [("in", "abc")])
    assert a != artifact.compute_id("s", {"x": 1, "y": [1, 2]}, [("in", "abd")])
    assert a != artifact.compute_id("t", {"x": 1, "y": [1, 2]}, [("in", "abc")])


def test_publish_writes_every_manifest_field(tmp_path):
    out = execute(SLOW, [], sets=["seconds=0"], out=tmp_path / "a")
    manifest = json.loads((out / "manifest.json").read_text())
    for key in (
        "kind",
        "stage",
        "schema",
        "id",
        "inputs",
        "config",
        "files",
        "metrics",
        "code",
        "host",
        "created_at",
        "duration_s",
    ):
        assert key in manifest, key
    assert set(manifest["files"]) == {"first.txt", "second.txt"}
    assert manifest["config"] == {"seconds": 0.0}
    assert not (tmp_path / "a.partial").exists()
    assert artifact.verify(out) == []


def test_kill_leaves_no_artifact_and_rerun_resumes(tmp_path):
    out = tmp_path / "killed"
    proc = start_slow(out, 30)
    wait_for(tmp_path / "killed.partial" / "_work" / "started")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed run must not leave a complete-looking artifact"
    with pytest.raises(BadInput, match="not an artifact"):
        artifact.open_artifact(tmp_path / "killed.partial")
    # The same command (same id) resumes from the partial directory and publishes.
    result = _rerun_fast_resume(out)
    manifest = artifact.read_manifest(result)
    assert manifest["metrics"]["resumed"] is True


def _rerun_fast_resume(out: Path) -> Path:
    """Re-run with the same config (same id) but patch the sleep away to keep the test fast."""
    import tests.slow_stage as slow

    original = slow.time.sleep
    slow.time.sleep = lambda s: None
    try:
        return execute(slow.SLOW, [], sets=["seconds=30"], out=out)
    finally:
        slow.time.sleep = original


def test_cache_hit_and_conflict(tmp_path):
    out = execute(SLOW, [], sets=["seconds=0"], out=tmp_path / "a")
    mtime = (out / "manifest.json").stat().st_mtime_ns
    assert execute(SLOW, [], sets=["seconds=0"], out=out) == out
    assert (out / "manifest.json").stat().st_mtime_ns == mtime, "a cache hit must not rewrite"
    with pytest.raises(BadInput, match="different artifact"):
        execute(SLOW, [], sets=["seconds=0.01"], out=out)
    execute(SLOW, [], sets=["seconds=0.01"], out=out, replace=True)
    assert artifact.read_manifest(out)["config"]["seconds"] == 0.01


def test_lock_contention(tmp_path):
    out = tmp_path / "locked"
    proc = start_slow(out, 30)
    try:
        wait_for(tmp_path / "locked.partial" / "_work" / "started")
        with pytest.raises(BadInput, match="lock held"):
            execute(SLOW, [], sets=["seconds=30"], out=out)
    finally:
        proc.kill()
        proc.wait()


def test_verify_catches_a_flipped_byte(tmp_path):
    out = execute(SLOW, [], sets=["seconds=0"], out=tmp_path / "a")
    f = out / "first.txt"
    f.write_bytes(b"onE")
    problems = artifact.verify(out)
    assert problems == ["first.txt: sha256 mismatch"]
    (out / "extra.bin").write_bytes(b"x")
    assert "extra.bin: not listed in the manifest" in artifact.verify(out)


def test_wrong_kind_input_is_refused(tmp_path):
    corpus = execute(SLOW, [], sets=["seconds=0"], out=tmp_path / "c")
    wants_model = Stage(
        name="m",
        kind="model",
        config=SLOW.config,
        run=SLOW.run,
        roles={"model": Role(kinds=("model",))},
        default_role="model",
    )
    with pytest.raises(BadInput, match="is a 'corpus' artifact, expected model"):
        execute(wants_model, [str(corpus)], out=tmp_path / "m")
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()


def test_incomplete_artifact_is_refused(tmp_path):
    out = execute(SLOW, [], sets=["seconds=0"], out=tmp_path / "a")
    (out / "second.txt").unlink()
    with pytest.raises(BadInput, match="missing payload file second.txt"):
        artifact.open_artifact(out)


def test_lineage_walks_to_raw(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text("hello")
    first = execute(SLOW, [str(raw)], sets=["seconds=0"], out=tmp_path / "first")
    second = execute(SLOW, [str(first)], sets=["seconds=0"], out=tmp_path / "second")
    tree = artifact.lineage(second)
    assert tree["inputs"][0]["id"] == artifact.read_manifest(first)["id"]
    leaf = tree["inputs"][0]["inputs"][0]
    assert leaf["kind"] == "raw" and leaf["path"] == str(raw.resolve())


def test_hash_files_streams_several_files_at_once(tmp_path, monkeypatch):
    import hashlib
    import threading

    files = []
    for i in range(4):
        files.append(tmp_path / f"f{i}")
        files[-1].write_bytes(bytes([i]) * (3 << 20))  # several read buffers each
    expected = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    assert artifact.hash_files(files, workers=2) == expected == artifact.hash_files(files, 1)
    both = threading.Barrier(2, timeout=10)  # breaks unless two files hash at the same time
    real = artifact.sha256_file

    def meeting(path):
        both.wait()
        return real(path)

    monkeypatch.setattr(artifact, "sha256_file", meeting)
    assert artifact.hash_files(files[:2], workers=2) == expected[:2]


def _edit_manifest(out: Path, edit) -> None:
    mf = out / "manifest.json"
    manifest = json.loads(mf.read_text())
    edit(manifest)
    mf.write_text(json.dumps(manifest, indent=2))


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["config"].update(seconds=5.0),
        lambda m: m.update(stage="pretrain"),
        lambda m: m["inputs"][0].update(id="raw-0123456789abcdef0123"),
        lambda m: m["code"].update(version="0.0.1"),
        lambda m: m.pop("config"),
    ],
    ids=["config", "stage", "input id", "version", "no config"],
)
def test_a_hand_edited_manifest_fails_verify_and_is_refused_as_input(tmp_path, edit):
    raw = tmp_path / "raw.txt"
    raw.write_text("hello")
    first = execute(SLOW, [str(raw)], sets=["seconds=0"], out=tmp_path / "first")
    assert artifact.id_problem(artifact.read_manifest(first)) is None
    _edit_manifest(first, edit)
    problems = artifact.verify(first)
    assert len(problems) == 1 and problems[0].startswith("manifest.json: ")
    with pytest.raises(BadInput, match="forged or corrupt manifest") as err:
        execute(SLOW, [str(first)], sets=["seconds=0"], out=tmp_path / "second")
    assert err.value.path == str(first / "manifest.json")
    assert not (tmp_path / "second").exists() and not (tmp_path / "second.partial").exists()


def test_verify_command_exits_2_on_an_edited_manifest(tmp_path):
    from typer.testing import CliRunner

    from stages.app import app

    out = execute(SLOW, [], sets=["seconds=0"], out=tmp_path / "a")
    assert CliRunner().invoke(app, ["verify", str(out)]).exit_code == 0
    _edit_manifest(out, lambda m: m["config"].update(seconds=1.0))
    result = CliRunner().invoke(app, ["verify", str(out)])
    assert result.exit_code != 0 and "does not match" in result.output


def test_a_nested_artifact_id_checks_out(tmp_path):
    root = tmp_path / "nested"
    root.mkdir()
    (root / "tokenizer.json").write_text("{}")
    art_id = artifact.write_nested(root, "tokenizer", "tokenize", {"vocab": 8}, [], {})
    manifest = artifact.read_manifest(root)
    assert manifest["id"] == art_id and artifact.id_problem(manifest) is None
    (root / "tokenizer.json").write_text('{"changed": 1}')
    _edit_manifest(root, lambda m: m.update(files=artifact.file_table(root)))
    assert "does not match" in artifact.id_problem(artifact.read_manifest(root))


# ---------------------------------------------------------------- code drift


def test_the_source_hash_covers_the_python_files_of_both_packages(tmp_path):
    lib, cli = tmp_path / "llmforge", tmp_path / "stages"
    for d in (lib / "train", cli):
        d.mkdir(parents=True)
    (lib / "train" / "loop.py").write_text("x = 1\n")
    (cli / "pretrain.py").write_text("y = 2\n")
    packages = {"llmforge": lib, "stages": cli}
    before = provenance.hash_sources(packages)
    (lib / "train" / "loop.pyc").write_bytes(b"compiled")
    (lib / "notes.md").write_text("not code")
    assert provenance.hash_sources(packages) == before  # only .py files count
    (cli / "pretrain.py").write_text("y = 3\n")
    edited = provenance.hash_sources(packages)
    assert edited != before
    (lib / "train" / "loop.py").rename(lib / "loop.py")  # same bytes, another module
    assert provenance.hash_sources(packages) != edited
    assert (
        len(provenance.source_hash()) == 64 and provenance.source_hash() == provenance.source_hash()
    )


def test_the_manifest_records_the_source_hash_outside_the_id(tmp_path):
    out = execute(SLOW, [], sets=["seconds=0"], out=tmp_path / "a")
    manifest = artifact.read_manifest(out)
    assert manifest["code"]["source_hash"] == provenance.source_hash()
    assert manifest["code"]["in_id"] is False
    assert manifest["id"] == artifact.compute_id("slow", {"seconds": 0.0}, [])
    _edit_manifest(out, lambda m: m["code"].update(source_hash="0" * 64))
    assert artifact.id_problem(artifact.read_manifest(out)) is None  # provenance, not identity


def other_code(monkeypatch) -> None:
    """From now on this process runs "other" llmforge source."""
    monkeypatch.setattr(provenance, "source_hash", lambda: "e" * 64)


def test_a_cache_hit_made_by_other_code_says_so_and_replace_rebuilds_it(
    tmp_path, monkeypatch, capsys
):
    out = execute(SLOW, [], sets=["seconds=0"], out=tmp_path / "a")
    built = artifact.read_manifest(out)
    capsys.readouterr()
    assert execute(SLOW, [], sets=["seconds=0"], out=out) == out
    assert "other llmforge code" not in capsys.readouterr().err  # same code: a plain hit
    other_code(monkeypatch)
    assert execute(SLOW, [], sets=["seconds=0"], out=out) == out
    err = capsys.readouterr().err
    assert "cache hit on an artifact built by other llmforge code" in err and "--replace" in err
    assert artifact.read_manifest(out) == built  # the hit changed nothing
    from stages.utility import _code_text  # the `code` row of `llmforge show`

    assert f"source {built['code']['source_hash'][:12]} (not this llmforge's)" in _code_text(
        built["code"]
    )
    execute(SLOW, [], sets=["seconds=0"], out=out, replace=True)
    rebuilt = artifact.read_manifest(out)
    assert rebuilt["id"] == built["id"] and rebuilt["code"]["source_hash"] == "e" * 64
    assert artifact.verify(out) == []


def test_code_in_the_id_on_request(tmp_path, monkeypatch):
    plain = execute(SLOW, [], sets=["seconds=0"], out=tmp_path / "plain")
    monkeypatch.setenv(provenance.CODE_IN_ID_ENV, "1")
    keyed = execute(SLOW, [], sets=["seconds=0"], out=tmp_path / "keyed")
    manifest = artifact.read_manifest(keyed)
    assert manifest["code"]["in_id"] is True
    assert manifest["id"] != artifact.read_manifest(plain)["id"]
    assert artifact.verify(keyed) == [] and artifact.verify(plain) == []  # both kinds check out
    execute(SLOW, [str(keyed), str(plain)], sets=["seconds=0"], out=tmp_path / "downstream")
    other_code(monkeypatch)  # changed code: a new id, so the old artifact is no hit
    with pytest.raises(BadInput, match="different artifact"):
        execute(SLOW, [], sets=["seconds=0"], out=keyed)
    _edit_manifest(keyed, lambda m: m["code"].update(source_hash="0" * 64))
    assert "source hash" in artifact.id_problem(artifact.read_manifest(keyed))
    monkeypatch.setenv(provenance.CODE_IN_ID_ENV, "maybe")
    with pytest.raises(BadInput, match="LLMFORGE_CODE_IN_ID"):
        execute(SLOW, [], sets=["seconds=0"], out=tmp_path / "bad")


def test_resuming_a_run_that_other_code_started_warns(tmp_path, monkeypatch, capsys):
    run = artifact.Run(tmp_path / "out", "id1", "corpus", "slow", {}, [])
    artifact.prepare_partial(run, replace=False)
    artifact.prepare_partial(run, replace=False)
    assert run.resumed and "other llmforge code" not in capsys.readouterr().err
    other_code(monkeypatch)
    artifact.prepare_partial(run, replace=False)
    assert "resuming a run that other llmforge code started" in capsys.readouterr().err
