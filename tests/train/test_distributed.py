"""Two CPU processes over gloo: FSDP2 parity with one process, and the pretrain CLI under torchrun."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from llmforge import artifact
from tests.stages.pretrain_helpers import metrics_lines, sets
from tests.train import dist_worker

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fsdp_two_ranks_match_one_process(tmp_path):
    result = tmp_path / "result.pt"
    mp.spawn(dist_worker.run, args=(2, free_port(), str(result)), nprocs=2, join=True)
    r = torch.load(result, weights_only=True)
    assert r["losses"] == pytest.approx(r["ref_losses"], rel=1e-5)
    assert r["max_diff"] < 1e-5
    assert r["checked"], "the collective check must be on in the distributed tests"


@pytest.mark.slow
def test_pretrain_under_torchrun_matches_single_process(tiny_tokens, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLMFORGE_QUIET": "1", "OMP_NUM_THREADS": "1"}
    common = ["-m", "stages.app", "pretrain", str(tiny_tokens), *sets("train.steps=30")]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
              f"--master-port={free_port()}"]  # fmt: skip
    two = subprocess.run([*launch, *common, "-o", str(tmp_path / "two")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, *common, "-o", str(tmp_path / "one"),
                          "-s", "train.batch_size=8"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    m2 = artifact.read_manifest(tmp_path / "two")
    m1 = artifact.read_manifest(tmp_path / "one")
    assert m2["host"]["world_size"] == 2
    assert m2["metrics"]["tokens"] == m1["metrics"]["tokens"]  # same global batch
    # different data streams per rank, same global batch size: close, not equal
    assert m2["metrics"]["final_val_loss"] == pytest.approx(
        m1["metrics"]["final_val_loss"], rel=0.1
    )
    assert len([x for x in metrics_lines(tmp_path / "two") if "loss" in x]) == 15  # rank 0 only


def _weight_sums(model) -> list[float]:
    return [float(p.detach().double().sum()) for p in model.parameters()]


def _full_model_on_each_rank(rank: int) -> dict:
    from torch.distributed.tensor import DTensor

    from llmforge.model.parallelize import parallelize
    from llmforge.train.engine import full_model
    from tests.train.engine_helpers import tiny_model

    raw = tiny_model(seed=0)
    plain = full_model(parallelize(raw), raw)
    return {
        "plain": not any(isinstance(p, DTensor) for p in plain.parameters()),
        "class": type(plain).__name__,
        "sums": _weight_sums(plain),
    }


def test_every_rank_gets_the_full_trained_model(tmp_path):
    """context-extend trains its next length from `full_model`'s result on every rank; it
    used to hand ranks > 0 their FSDP shards."""
    from tests.test_distributed import run_two_ranks
    from tests.train.engine_helpers import tiny_model

    expected = _weight_sums(tiny_model(seed=0))
    for r in run_two_ranks(_full_model_on_each_rank, tmp_path):
        assert r["plain"] and r["class"] == "GPT"
        assert r["sums"] == pytest.approx(expected, rel=1e-12)
