"""scripts/gpu-check.sh on a machine without a GPU: the dry path, so it cannot rot in CI.

The dry path installs the wheels of a folder (here a pure-Python probe wheel built on the
spot, and one for another Python that must be skipped), collects the `gpu` tests, and runs
each benchmark's --dry harness on tiny CPU shapes, with the packages the GPU node lacks
blocked (node_packages.py). The dry run costs about 30 s of CPU, so its tests are `slow`
(still part of `make test`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.scripts.node_packages import blocking_site

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"


def _wheel(folder: Path, name: str, tag: str, files: dict[str, str]) -> Path:
    """A minimal valid wheel (METADATA, WHEEL and a hashed RECORD) holding `files`."""
    dist = f"{name}-1.0.dist-info"
    files = {
        **files,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-1.0-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in {**files, f"{dist}/RECORD": "\n".join(record) + "\n"}.items():
            z.writestr(path, text)
    return wheel


def _run(tmp_path: Path, parts: str | None = None, budget: int | None = None):
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_MODE="dry",
               GPU_WHEELS=str(tmp_path / "wheels"), GPU_CHECK_SITE=str(tmp_path / "site"),
               PYTHONPATH=str(blocking_site(tmp_path / "block")), OMP_NUM_THREADS="1")  # fmt: skip
    env.pop("OUT", None)
    if parts:
        env["GPU_CHECK_PARTS"] = parts
    if budget:
        env["GPU_CHECK_BUDGET_S"] = str(budget)
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    return done, out


def _rows(summary: str) -> dict[str, tuple[str, str]]:
    """part -> (status, figure) from the table gpu-check prints last."""
    rows = {}
    for line in summary.splitlines()[2:]:
        part, status, _secs, *figure = line.split(maxsplit=3)
        rows[part] = (status, figure[0] if figure else "")
    return rows


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-check")
    _wheel(tmp / "wheels", "gpucheck_probe", "py3-none-any",
           {"gpucheck_probe/__init__.py": "VALUE = 'installed'\n"})  # fmt: skip
    _wheel(tmp / "wheels", "gpucheck_other", "cp399-cp399-manylinux_2_17_x86_64", {"x.py": ""})
    done, out = _run(tmp)
    return tmp, done, out


@pytest.mark.slow
def test_dry_path_runs_every_part_and_prints_the_table_last(dry_run):
    _, done, out = dry_run
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = _rows(done.stdout)
    for part in ("setup", "tests", "kernels", "pretrain", "post", "sft", "dpo", "rlvr", "eval"):
        assert rows[part][0] == "ok", (part, rows.get(part), done.stdout)
    assert rows["rlvr-vllm"] == ("skip", rows["rlvr-vllm"][1])
    assert "vllm not installed" in rows["rlvr-vllm"][1]
    assert "gpu tests collected" in rows["tests"][1] and not rows["tests"][1].startswith("0 ")
    assert "MFU" in rows["pretrain"][1]
    assert (out / "summary.txt").read_text() == done.stdout


@pytest.mark.slow
def test_dry_path_installs_the_wheels_folder_beside_torch(dry_run):
    tmp, done, out = dry_run
    site = tmp / "site"
    assert (site / "gpucheck_probe" / "__init__.py").is_file()
    assert not (site / "torch").exists() and not (site / "x.py").exists()
    setup_log = (out / "setup.log").read_text()
    assert "skipped (not for this Python): gpucheck_other" in setup_log
    assert "gpucheck_probe" in setup_log


@pytest.mark.slow
def test_dry_path_logs_fit_what_the_device_tool_returns(dry_run):
    _, _, out = dry_run
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8, files  # the device tool brings back at most 8 files
    assert {"setup.log", "tests.log", "kernels.log", "pretrain.log", "post.log"} <= set(files)
    records = [json.loads(x) for x in (out / "figures.jsonl").read_text().splitlines()]
    parts = {r["part"] for r in records}
    assert {"kernels", "pretrain", "post/sft", "post/rlvr-vllm"} <= parts
    kernels = next(r for r in records if r["part"] == "kernels")
    assert {r["impl"] for r in kernels["rows"]} >= {"torch eager", "torch.compile", "llmforge"}


def test_an_unknown_part_fails_and_the_budget_skips_the_rest(tmp_path):
    done, _ = _run(tmp_path, parts="bogus setup", budget=5)
    rows = _rows(done.stdout)
    assert done.returncode == 1
    assert rows["bogus"][0] == "FAIL" and "unknown part" in rows["bogus"][1]
    assert rows["setup"] == ("skip", "out of time (budget 5 s)")
