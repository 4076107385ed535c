"""Checkpoints in one process: the sharded layout, CUDA RNG, safe metadata, format 1, leftovers
of a crashed run, model-only export, and kill -9 during an asynchronous save."""

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llmforge.data.labelled_tokens import make_tokens
from llmforge.errors import BadInput
from llmforge.train import checkpoint
from llmforge.train.loop import Loop
from tests.train.engine_helpers import checkpoint_loop

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return make_tokens(tmp_path_factory.mktemp("tok"), {"a": 40, "b": 40})


def weights(loop: Loop) -> dict:
    return {k: v.detach().clone() for k, v in loop.model.state_dict().items()}


def test_layout_is_dcp_shards_plus_json_and_old_ones_are_pruned(tokens, tmp_path):
    loop = checkpoint_loop(tokens, tmp_path, steps=7, every=2, keep_checkpoints=2)
    loop.run()
    assert [s for s, _ in checkpoint.checkpoints(tmp_path)] == [4, 6]
    ckpt = tmp_path / "ckpt-00000006"
    assert {p.name for p in ckpt.iterdir()} == {"shards", "state.json", "rank0.json"}
    assert {p.name for p in (ckpt / "shards").iterdir()} == {"__0_0.distcp", ".metadata"}
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 6 and state["shared"]["loader"]["rows"] == 6 * 4
    assert not list(tmp_path.glob("*.tmp"))


def test_cuda_rng_of_every_device_is_saved_and_restored(tokens, tmp_path, monkeypatch):
    """Issue 15, fault 7: a GPU resume must restore the CUDA generators, not only the CPU's."""
    saved = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # a process using CUDA
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in saved])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.extend(states))
    first = checkpoint_loop(tokens, tmp_path)
    first.step = 3
    first.save_checkpoint()
    second = checkpoint_loop(tokens, tmp_path)
    assert second.resume() and second.step == 3
    assert len(restored) == 2 and all(torch.equal(a, b) for a, b in zip(restored, saved))


def test_async_save_keeps_the_state_of_its_step(tokens, tmp_path):
    loop = checkpoint_loop(tokens, tmp_path, async_checkpoint=True)
    loop.step = 2
    before = weights(loop)
    loop.save_checkpoint()
    with torch.no_grad():  # training goes on while the save is written
        for p in loop.model.parameters():
            p.add_(1.0)
    loop.writer.wait()
    fresh = checkpoint_loop(tokens, tmp_path)
    assert fresh.resume() and fresh.step == 2
    assert all(torch.equal(before[k], v) for k, v in weights(fresh).items())


class Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_metadata_that_would_run_code_is_refused(tokens, tmp_path, monkeypatch):
    loop = checkpoint_loop(tokens, tmp_path)
    loop.step = 1
    loop.save_checkpoint()
    meta = tmp_path / "ckpt-00000001" / "shards" / ".metadata"
    meta.write_bytes(pickle.dumps(Boom()))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput, match=r"refers to posix.system.*refusing"):
        checkpoint_loop(tokens, tmp_path).resume()
    assert not (tmp_path / "pwned").exists()


def test_model_weights_reads_only_the_model_entries(tokens, tmp_path):
    loop = checkpoint_loop(tokens, tmp_path, steps=3)
    loop.run()
    path = loop.final_checkpoint()
    # overwrite every optimizer tensor's bytes: reading them would fail
    reader = checkpoint.SafeReader(path / "shards")
    meta = reader.read_metadata()
    with open(path / "shards" / "__0_0.distcp", "r+b") as f:
        for index, info in meta.storage_data.items():
            if index.fqn.startswith("optim."):
                f.seek(info.offset)
                f.write(b"\xff" * info.length)
    got = checkpoint.model_weights(path)
    assert got.keys() == loop.model.state_dict().keys()
    assert all(torch.equal(got[k], v) for k, v in loop.model.state_dict().items())


def test_leftovers_of_a_crash_do_not_block_the_rerun(tokens, tmp_path):
    loop = checkpoint_loop(tokens, tmp_path)
    loop.step = 4
    loop.save_checkpoint()
    (tmp_path / "ckpt-00000006.tmp" / "shards").mkdir(parents=True)  # killed mid-write
    (tmp_path / "ckpt-00000008").mkdir()  # a directory without its files
    rerun = checkpoint_loop(tokens, tmp_path)
    assert rerun.resume() and rerun.step == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000004"]
    rerun.run()
    assert checkpoint.latest(tmp_path).name == "ckpt-00000004"


def write_format1(loop: Loop, work: Path, step: int) -> None:
    """A checkpoint as llmforge wrote it before DCP: state.pt from rank 0 and rank{r}.json."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    path = work / f"ckpt-{step:08d}"
    path.mkdir(parents=True)
    state = {
        "model": get_model_state_dict(loop.model, options=checkpoint.FULL),
        "optim": get_optimizer_state_dict(loop.model, loop.optimizers, options=checkpoint.FULL),
        "sched": [s.state_dict() for s in loop.schedulers],
        "torch_rng": torch.get_rng_state(),
        "step": step,
    }
    torch.save(state, path / "state.pt")
    loader = {"micro_batches": step, "rng": None, "readers": {}, "carry": None}
    (path / "rank0.json").write_text(json.dumps({"loader": loader, "callbacks": {}}))


def test_a_format1_checkpoint_still_resumes(tokens, tmp_path):
    old = checkpoint_loop(tokens, tmp_path / "run", steps=8)
    old.total_steps = 3
    old.run()
    write_format1(old, tmp_path / "run", 3)
    resumed = checkpoint_loop(tokens, tmp_path / "run", steps=8)
    assert resumed.resume() and resumed.step == 3
    assert all(torch.equal(weights(old)[k], v) for k, v in weights(resumed).items())
    assert resumed.loader.rows == 3 * 4  # the amount of data seen carries over
    resumed.run()
    assert resumed.step == 8 and checkpoint.model_weights(tmp_path / "run" / "ckpt-00000003")


def test_kill_9_during_an_async_save_leaves_the_previous_checkpoint(tokens, tmp_path):
    work = tmp_path / "work"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.train.async_kill_worker", str(tokens), str(work)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "writing ckpt-00000004"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert (work / "ckpt-00000004.tmp").is_dir()
    assert checkpoint.latest(work).name == "ckpt-00000002"
    resumed = checkpoint_loop(tokens, work, steps=6, every=2)
    assert resumed.resume() and resumed.step == 2
    resumed.run()
    straight = checkpoint_loop(tokens, tmp_path / "straight", steps=6, every=2)
    straight.run()
    assert all(np.array_equal(weights(straight)[k], v) for k, v in weights(resumed).items())
