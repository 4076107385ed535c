"""What the GPU check runs imports on the bare GPU node: nothing it lacks at module level.

A child Python blocks the packages the node does not have (node_packages.py) and imports
llmforge, the stages and benchmarks gpu-check.sh runs, and every test module that holds
`gpu` tests. A stage
that imported, say, datatrove or lm_eval at the top would break the check there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.scripts.node_packages import MISSING_ON_NODE, blocking_site

ROOT = Path(__file__).resolve().parents[2]
MODULES = [
    "llmforge", "llmforge.ops", "llmforge.ops.fused", "llmforge.ops.linear_ce",
    "llmforge.kernels.rms_norm", "llmforge.kernels.swiglu", "llmforge.kernels.rope",
    "llmforge.kernels.cross_entropy", "llmforge.model.gpt", "llmforge.model.hf",
    "llmforge.model.attention", "llmforge.train.engine", "llmforge.gen", "llmforge.post.sft",
    "llmforge.post.dpo", "llmforge.post.rl_loop", "llmforge.verifiers",
    "stages.app", "stages.tokenize", "stages.pretrain", "stages.sft", "stages.dpo",
    "stages.rlvr", "stages.eval",
    "bench.kernels_gpu", "bench.gpu_pretrain", "bench.gpu_post", "bench.gpu_data",
]  # fmt: skip


def gpu_test_modules() -> list[str]:
    """The test modules `pytest -m gpu` runs there: those that use the marker (as
    gpu-check.sh finds them)."""
    files = [p for p in (ROOT / "tests").rglob("test_*.py") if "pytest.mark.gpu" in p.read_text()]
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in files)


def _child_env(tmp_path: Path) -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = f"{blocking_site(tmp_path / 'site')}:{ROOT}"
    return env


def test_gpu_check_modules_import_without_the_nodes_missing_packages(tmp_path):
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    modules = MODULES + gpu_test_modules()
    assert "tests.kernels.test_gpu_kernels" in modules
    done = subprocess.run([sys.executable, "-c", code, *modules], env=_child_env(tmp_path),
                          capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_block_is_real(tmp_path):
    """The blocker must make those imports fail, or the test above proves nothing."""
    code = f"import {MISSING_ON_NODE[0]}"
    done = subprocess.run([sys.executable, "-c", code], env=_child_env(tmp_path),
                          capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert done.returncode != 0 and "not on the GPU node" in done.stderr
