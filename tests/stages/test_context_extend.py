"""The context-extend stage: staged lengths with ABF, YaRN in the exported config."""

import json

import pytest
import torch
from typer.testing import CliRunner

from llmforge import artifact
from llmforge.model.hf import load_gpt
from stages.app import app
from tests.stages.pretrain_helpers import TINY_SETS

runner = CliRunner()
TRAIN_SETS = [s for s in TINY_SETS if not s.startswith(("model.", "train.seq_len"))]


def invoke(stage, *args, sets=()):
    flat = [x for s in sets for x in ("-s", s)]
    return runner.invoke(app, [stage, *map(str, args), *flat, "-q"])


@pytest.fixture(scope="module")
def short_model(tiny_tokens, tmp_path_factory):
    out = tmp_path_factory.mktemp("ce") / "base"
    sets = [*TINY_SETS, "model.max_seq_len=64", "train.seq_len=64", "train.steps=6"]
    result = invoke("pretrain", tiny_tokens, "-o", out, sets=sets)
    assert result.exit_code == 0, result.output
    return out


def test_extends_in_stages_and_exports_yarn(short_model, tiny_tokens, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "long"
    sets = [*TRAIN_SETS, "train.steps=3", "extend.lengths=[96, 128]",
            "extend.rope_theta=[20000, 40000]", "extend.yarn_factor=2"]  # fmt: skip
    result = invoke("context-extend", short_model, f"tokens={tiny_tokens}", "-o", out, sets=sets)
    assert result.exit_code == 0, result.output
    metrics = artifact.read_manifest(out)["metrics"]
    assert metrics["original_max_seq_len"] == 64 and metrics["max_seq_len"] == 256
    assert metrics["len_96"]["steps"] == 3 and metrics["len_128"]["steps"] == 3
    cfg = load_gpt(out).cfg
    assert cfg.rope_theta == 40000 and cfg.rope_scaling.type == "yarn"
    assert cfg.rope_scaling.factor == 2 and cfg.rope_scaling.original_max_seq_len == 128
    hf_cfg = json.loads((out / "config.json").read_text())
    assert hf_cfg["max_position_embeddings"] == 256
    assert hf_cfg["rope_parameters"]["rope_type"] == "yarn"
    hf = AutoModelForCausalLM.from_pretrained(str(out))
    assert hf(torch.randint(0, 500, (1, 256))).logits.shape == (1, 256, 512)


def test_first_length_must_exceed_the_model(short_model, tiny_tokens, tmp_path):
    sets = [*TRAIN_SETS, "extend.lengths=[64]", "extend.rope_theta=[0]"]
    result = invoke("context-extend", short_model, f"tokens={tiny_tokens}", "-o", tmp_path / "x",
                    sets=sets)  # fmt: skip
    assert result.exit_code == 2 and "extend.lengths" in result.output


def test_context_parallel_needs_ranks_that_divide_the_lengths(short_model, tiny_tokens, tmp_path):
    sets = [*TRAIN_SETS, "extend.lengths=[96, 129]", "extend.rope_theta=[0, 0]",
            "parallel.context=2"]  # fmt: skip
    result = invoke("context-extend", short_model, f"tokens={tiny_tokens}", "-o", tmp_path / "x",
                    sets=sets)  # fmt: skip
    assert result.exit_code == 2 and "parallel.context" in result.output
    assert "129" in result.output and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_context_extend_under_torchrun_with_context_parallelism(short_model, tiny_tokens, tmp_path):
    """Two ranks split each 128-token row; one data-parallel group, so the data (and the
    losses, up to float rounding) are those of a one-process run."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.train.test_distributed import free_port

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "LLMFORGE_QUIET": "1", "OMP_NUM_THREADS": "1"}
    sets = [*TRAIN_SETS, "train.steps=3", "extend.lengths=[128]", "extend.rope_theta=[40000]"]
    common = ["-m", "stages.app", "context-extend", str(short_model), f"tokens={tiny_tokens}",
              *[x for s in sets for x in ("-s", s)]]  # fmt: skip
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
              f"--master-port={free_port()}"]  # fmt: skip
    two = subprocess.run([*launch, *common, "-s", "parallel.context=2", "-o", str(tmp_path / "two")],
                         env=env, cwd=root, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, *common, "-o", str(tmp_path / "one")], env=env,
                         cwd=root, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    m2, m1 = (artifact.read_manifest(tmp_path / n)["metrics"]["len_128"] for n in ("two", "one"))
    assert m2["tokens"] == m1["tokens"]
    assert m2["final_train_loss"] == pytest.approx(m1["final_train_loss"], rel=1e-4)
    assert m2["final_val_loss"] == pytest.approx(m1["final_val_loss"], rel=1e-4)
