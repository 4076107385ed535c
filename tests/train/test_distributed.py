"""Two CPU processes over gloo: FSDP2 parity with one process, sharded checkpoints resumed on
two ranks and on one, a peer that never joins, and the pretrain CLI under torchrun."""

import functools
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from llmforge import artifact
from llmforge.data.labelled_tokens import make_tokens
from llmforge.train import checkpoint
from llmforge.train.config import TrainConfig
from llmforge.train.loop import resume_plan
from tests.stages.pretrain_helpers import metrics_lines, sets
from tests.train import dist_worker, resume_worker

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


def test_sharded_checkpoint_resumes_on_two_ranks_bitwise_and_on_one_in_the_same_order(tmp_path):
    tokens = make_tokens(tmp_path / "tok", {"a": 40, "b": 40})
    mp.spawn(resume_worker.train_and_resume, args=(2, free_port(), str(tokens), str(tmp_path)),
             nprocs=2, join=True)  # fmt: skip
    w = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert all(torch.equal(w["first"][k], w["second"][k]) for k in w["first"])  # 2 -> 2
    assert all(torch.equal(w["first"][k], w["exported"][k]) for k in w["first"])
    # every rank wrote its own shards
    shards = {p.name for p in (tmp_path / "first" / "ckpt-00000004" / "shards").iterdir()}
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata"} <= shards
    # 2 -> 1: one rank, twice the accumulation, the same global rows from step 5 on
    rows = [torch.load(tmp_path / f"rows{r}.pt", weights_only=True)["rows"] for r in (0, 1)]
    expected = torch.cat([torch.cat(pair) for pair in zip(*rows)][4:])
    work = tmp_path / "one"
    shutil.copytree(tmp_path / "first" / "ckpt-00000004", work / "ckpt-00000004")
    plan, step, saved_world = resume_plan(work, TrainConfig(batch_size=resume_worker.BATCH))
    accum = plan.micro_batches(step, resume_worker.BATCH, world=1)
    assert (step, saved_world, accum) == (4, 2, 2)
    one = resume_worker.build_loop(tokens, work, 0, 1, accum)
    assert one.resume() and one.step == 4
    one.run()
    assert torch.equal(torch.cat(one.loader.seen), expected)
    final = one.model.state_dict()
    for k, v in w["first"].items():  # same data and math, another reduction order
        torch.testing.assert_close(final[k], v, rtol=1e-3, atol=1e-4)


def test_a_peer_that_never_joins_fails_the_checkpoint_instead_of_hanging(tmp_path):
    tokens = make_tokens(tmp_path / "tok", {"a": 20})
    mp.spawn(resume_worker.peer_never_joins, args=(2, free_port(), str(tokens), str(tmp_path)),
             nprocs=2, join=True)  # fmt: skip
    r = torch.load(tmp_path / "outcome.pt", weights_only=True)
    assert "lost its peers or waited past the collective timeout" in r["outcome"]
    assert r["seconds"] < 10  # the 3 s timeout, not forever
    # the rerun is not locked out by what the failed save left behind
    assert list((tmp_path / "work").glob("*.tmp"))
    assert (
        checkpoint.clean_stale(tmp_path / "work") and checkpoint.latest(tmp_path / "work") is None
    )
    assert not list((tmp_path / "work").glob("*.tmp"))


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


def _full_model_on_each_rank(rank: int, work) -> dict:
    from types import SimpleNamespace

    from torch.distributed.tensor import DTensor

    from llmforge.model.parallelize import parallelize
    from llmforge.train import checkpoint
    from llmforge.train.engine import full_model
    from tests.train.engine_helpers import tiny_model

    raw = tiny_model(seed=0)
    model = parallelize(raw)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    writer = checkpoint.CheckpointWriter(work)
    loop = SimpleNamespace(final_checkpoint=lambda: writer.save(1, model, [optimizer], [], {}))
    plain = full_model(loop, raw)
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
    work = tmp_path / "work"
    worker = functools.partial(_full_model_on_each_rank, work=work)
    for r in run_two_ranks(worker, tmp_path):
        assert r["plain"] and r["class"] == "GPT"
        assert r["sums"] == pytest.approx(expected, rel=1e-12)
