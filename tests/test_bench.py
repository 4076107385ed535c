"""Every benchmark runs as docs/benchmarks.md documents it (`python bench/X.py`): each
script's `--help` works with only the installed packages importable, so a benchmark that
reaches into the test suite (`tests` is not installed) fails here, not in `make bench`."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the scripts, not the helper modules they share (gpu_data.py, gpu_harness.py)
SCRIPTS = sorted(
    p for p in (ROOT / "bench").glob("*.py") if '__name__ == "__main__"' in p.read_text()
)

# Runs each script as __main__ with --help in one process (torch is imported once), with
# `tests` made unimportable, and reports the exit code and output of each.
PROBE = """
import contextlib, io, json, runpy, sys
sys.modules["tests"] = None  # not installed: `import tests...` must fail as it does for users
results = {}
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_path(path, run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code or 0
    except Exception as e:
        code, _ = 1, out.write(f"{type(e).__name__}: {e}")
    results[path] = [code, out.getvalue()]
print(json.dumps(results))
"""


def test_every_benchmark_prints_its_help_without_the_test_suite():
    assert len(SCRIPTS) >= 9
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, SCRIPTS)],
        cwd=ROOT / "bench",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for path, (code, output) in results.items():
        assert code == 0 and "usage:" in output, f"{Path(path).name}: {output[-500:]}"
