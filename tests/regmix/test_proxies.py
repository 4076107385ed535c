"""Proxy tasks: a task trains with the pretrain engine and leaves a result; finished proxies
are skipped; the Slurm array gets one worker command per pending proxy."""

import shutil
import subprocess
from pathlib import Path

import pytest

from llmforge.regmix import proxies, worker
from llmforge.regmix.config import ProxyConfig, ProxySlurmConfig
from llmforge.slurm import SlurmConfig

TINY = ProxyConfig(steps=2, batch_size=2, seq_len=32, val_batches=1, warmup_steps=0)
WEIGHTS = {"literature": 0.2, "code": 0.3, "math": 0.5}


def task(folder: Path, name: str, tokens: Path) -> Path:
    return proxies.write_task(folder, name, WEIGHTS, [tokens], TINY, vocab_size=512)


def test_a_task_trains_a_proxy_and_records_its_losses(tmp_path, tiny_tokens):
    t = task(tmp_path, "p0", tiny_tokens)
    assert proxies.pending([t]) == [t]
    result = proxies.run_task(t)
    assert proxies.pending([t]) == [] and proxies.read_result(t) == result
    assert result["weights"] == WEIGHTS and result["tokens"] == 2 * 2 * 32
    assert set(result["val_loss_per_domain"]) == set(WEIGHTS)
    assert all(0 < v < 10 for v in result["val_loss_per_domain"].values())
    assert not (tmp_path / "runs" / "p0.partial").exists()  # scratch removed


def test_worker_skips_finished_proxies(tmp_path, tiny_tokens):
    t = task(tmp_path, "done", tiny_tokens)
    proxies.result_path(t).write_text('{"name": "done", "planted": true}')
    assert worker.main([str(t)]) == 0
    assert proxies.read_result(t) == {"name": "done", "planted": True}
    assert worker.main([]) == 2


def test_array_commands_run_the_worker_once_per_task(tmp_path):
    tasks = [tmp_path / f"{i:04d}.task.json" for i in range(3)]
    lines = proxies.array_commands(tasks, threads=1).splitlines()
    assert len(lines) == 3
    for line, t in zip(lines, tasks):
        assert "OMP_NUM_THREADS=1" in line and "-m llmforge.regmix.worker" in line
        assert line.endswith(str(t))


@pytest.mark.slurm
def test_slurm_array_trains_the_pending_proxies(tmp_path, tiny_tokens):
    if shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True).returncode:
        root = Path(__file__).resolve().parents[2]
        subprocess.run(["bash", str(root / "scripts/local-slurm.sh"), "start"], check=True)
    tasks = [task(tmp_path, f"{i:04d}", tiny_tokens) for i in range(2)]
    cfg = ProxySlurmConfig(enabled=True, poll_s=1.0, job=SlurmConfig(cpus_per_task=1))
    proxies.run_slurm(tasks, cfg, threads=1, folder=tmp_path)
    assert proxies.pending(tasks) == []
    assert (tmp_path / "slurm-jobid").is_file()
