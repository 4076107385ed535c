"""recipes/tiny/pipeline.sh around its stages, with a stand-in `llmforge` on PATH: the evals
it runs alongside rlvr fail the pipeline when they fail, and stop when rlvr fails."""

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Prints the -o path of each call as a stage does; fails or stalls the stage named by
# $FAIL (after $FAIL_AFTER seconds) or $STALL (the last part of its -o path).
FAKE_LLMFORGE = """#!/usr/bin/env bash
out="" prev=""
for a in "$@"; do [[ $prev == -o ]] && out=$a; prev=$a; done
name=${out##*/}
echo "$name" >>"$CALLS"
if [[ $name == "${FAIL:-}" ]]; then sleep "${FAIL_AFTER:-0}"; echo "stand-in failure of $name" >&2; exit 3; fi
if [[ $name == "${STALL:-}" ]]; then echo $$ >"$STALL_PID"; sleep 60; fi
mkdir -p "$out"
echo "$out"
"""


def run(tmp_path: Path, **env) -> tuple[subprocess.CompletedProcess, float]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "llmforge"
    fake.write_text(FAKE_LLMFORGE)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    full_env = {
        **os.environ,
        **env,
        "CALLS": str(tmp_path / "calls"),
        "STALL_PID": str(tmp_path / "stall.pid"),
        "PYTHONPATH": str(ROOT),
        "PATH": os.pathsep.join(
            [str(bin_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")]
        ),
    }
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(ROOT / "recipes/tiny/pipeline.sh"), "smoke", str(tmp_path / "out")],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, time.monotonic() - start


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls").read_text().split()


def test_all_stages_run_and_the_report_reads_every_eval(tmp_path):
    proc, _ = run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    made = calls(tmp_path)
    assert made[-1] == "report"
    for name in ("eval-base", "eval-chat", "rl", "eval-rl"):
        assert name in made
    assert made.index("rl") < made.index("eval-rl")


def test_a_failed_eval_alongside_rlvr_fails_the_pipeline_before_the_report(tmp_path):
    proc, _ = run(tmp_path, FAIL="eval-base")
    assert proc.returncode != 0
    assert "the evals run alongside rlvr failed" in proc.stderr
    assert "stand-in failure of eval-base" in proc.stderr  # the log's tail is shown
    assert "report" not in calls(tmp_path)


def gone_within(pid: int, seconds: float) -> bool:
    """True once the process has exited; a zombie counts as exited, since a container's
    init may never reap the orphans the pipeline leaves."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.2)
    return False


def test_a_failed_rlvr_stops_the_evals_running_alongside_it(tmp_path):
    proc, seconds = run(tmp_path, FAIL="rl", FAIL_AFTER="2", STALL="eval-base")
    assert proc.returncode != 0
    assert seconds < 50  # the stalled eval sleeps 60 s; the pipeline did not wait for it
    pid = int((tmp_path / "stall.pid").read_text())
    assert gone_within(pid, seconds=10)
    assert "eval-rl" not in calls(tmp_path)
