"""Slurm: rendering (always), and chains and arrays against a real local Slurm (marker
`slurm`; scripts/local-slurm.sh starts it, as .ci/run does)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmforge import artifact, config
from llmforge.slurm import SlurmConfig, render_array, render_job
from stages.app import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_render_single_process_job(tmp_path):
    cfg = config.load(SlurmConfig, None, ["time=00:05:00", "partition=gpu", "extra=['--qos=hi']"])
    script = render_job(
        cfg, "tokenize", ["tokenize", "a=/x.jsonl", "-o", "/o"], tmp_path / "o", ROOT
    )
    assert "#SBATCH --partition=gpu" in script and "#SBATCH --qos=hi" in script
    assert "#SBATCH --requeue" in script and "#SBATCH --signal=B:USR1@120" in script
    assert "-m stages.app tokenize a=/x.jsonl -o /o" in script
    assert "torch.distributed.run" not in script
    assert f"--output={tmp_path}/o.slurm/slurm-%j.out" in script


def test_render_multinode_torchrun(tmp_path):
    cfg = config.load(SlurmConfig, None, ["nodes=4", "gpus_per_node=8"])
    script = render_job(cfg, "pretrain", ["pretrain", "/t"], tmp_path / "o", ROOT)
    assert "#SBATCH --nodes=4" in script and "#SBATCH --gpus-per-node=8" in script
    assert "--nproc-per-node=8" in script and "--rdzv-endpoint=$MASTER_ADDR:$MASTER_PORT" in script
    assert "NCCL_ASYNC_ERROR_HANDLING=1" in script


def test_cli_dry_run_renders_without_submitting(tmp_path, tiny_corpus):
    out = tmp_path / "tok"
    result = runner.invoke(
        app,
        [
            "tokenize",
            f"m={tiny_corpus['math']}",
            "-o",
            str(out),
            "--slurm",
            "--dry-run",
            "--slurm-set",
            "nodes=2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    script = (tmp_path / "tok.slurm" / "job.sbatch").read_text()
    assert "#SBATCH --nodes=2" in script and "torch.distributed.run" in script
    assert not (tmp_path / "tok.slurm" / "jobid").exists()


def test_bad_slurm_key_is_a_config_error(tmp_path, tiny_corpus):
    result = runner.invoke(
        app,
        [
            "tokenize",
            f"m={tiny_corpus['math']}",
            "-o",
            str(tmp_path / "o"),
            "--slurm",
            "--dry-run",
            "--slurm-set",
            "node=2",
        ],
    )
    assert result.exit_code == 2 and "did you mean 'nodes'" in result.output


def test_array_script(tmp_path):
    cfg = SlurmConfig()
    script = render_array(cfg, "proxies", tmp_path / "cmds.txt", 32, tmp_path, ROOT, max_parallel=4)
    assert "#SBATCH --array=0-31%4" in script and "SLURM_ARRAY_TASK_ID + 1" in script


# ---------------------------------------------------------------- against a real Slurm


@pytest.fixture(scope="module")
def local_slurm():
    if shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True).returncode:
        subprocess.run(["bash", str(ROOT / "scripts/local-slurm.sh"), "start"], check=True)
    return True


def wait_jobs(jobs: list[str], timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-j", ",".join(jobs), "-o", "%i"], capture_output=True, text=True
        ).stdout
        if not out.strip():
            return
        time.sleep(1)
    raise AssertionError(f"jobs {jobs} still queued: {out}")


def cli(*args) -> tuple[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "stages.app", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), result.stderr


@pytest.mark.slurm
def test_chain_of_three_with_dependencies(local_slurm, tmp_path, tiny_corpus):
    a, _ = cli(
        "tokenize",
        f"m={tiny_corpus['math']}",
        "-o",
        tmp_path / "a",
        "-s",
        "vocab_size=320",
        "--slurm",
    )
    b, b_log = cli(
        "tokenize", f"c={tiny_corpus['code']}", f"tokenizer={a}", "-o", tmp_path / "b", "--slurm"
    )
    c, c_log = cli(
        "tokenize",
        f"l={tiny_corpus['literature']}",
        f"tokenizer={b}",
        "-o",
        tmp_path / "c",
        "--slurm",
    )
    jobs = [
        (Path(p).parent / (Path(p).name + ".slurm") / "jobid").read_text().strip()
        for p in (a, b, c)
    ]
    assert f"after {jobs[0]}" in b_log and f"after {jobs[1]}" in c_log
    wait_jobs(jobs)
    tree = artifact.lineage(c)
    assert tree["inputs"][1]["id"] == artifact.read_manifest(b)["id"]
    assert tree["inputs"][1]["inputs"][1]["id"] == artifact.read_manifest(a)["id"]
    assert all(artifact.verify(p) == [] for p in (a, b, c))
    # re-submitting a finished stage is a cache hit: no new job
    cli(
        "tokenize",
        f"m={tiny_corpus['math']}",
        "-o",
        tmp_path / "a",
        "-s",
        "vocab_size=320",
        "--slurm",
    )
    assert (tmp_path / "a.slurm" / "jobid").read_text().strip() == jobs[0]


@pytest.mark.slurm
def test_job_array_runs_every_task(local_slurm, tmp_path, tiny_corpus):
    n = 3
    cmds = tmp_path / "cmds.txt"
    cmds.write_text(
        "".join(
            f"{sys.executable} -m stages.app tokenize m={tiny_corpus['math']} "
            f"-o {tmp_path}/p{i} -s vocab_size=320 -s seed={i} -q\n"
            for i in range(n)
        )
    )
    script = tmp_path / "array.sbatch"
    script.write_text(render_array(SlurmConfig(cpus_per_task=1), "arr", cmds, n, tmp_path, ROOT))
    from llmforge.slurm import submit

    wait_jobs([submit(script)])
    ids = {artifact.read_manifest(tmp_path / f"p{i}")["id"] for i in range(n)}
    assert len(ids) == n


def _pretrain_args(tokens, out, *extra):
    from tests.stages.pretrain_helpers import sets

    return [
        "pretrain",
        str(tokens),
        *sets("train.steps=60", "train.checkpoint_every=5", "train.val_every=0", *extra),
        "-o",
        str(out),
    ]


@pytest.mark.slurm
@pytest.mark.slow
def test_pretrain_preempted_by_usr1_requeues_and_matches(
    local_slurm, tmp_path, tiny_tokens, monkeypatch
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # sbatch exports the environment to the job
    reference, _ = cli(*_pretrain_args(tiny_tokens, tmp_path / "ref"))
    out, _ = cli(*_pretrain_args(tiny_tokens, tmp_path / "slurm"), "--slurm")
    job = (tmp_path / "slurm.slurm" / "jobid").read_text().strip()
    work = tmp_path / "slurm.partial" / "_work"
    deadline = time.time() + 240
    while not any(work.glob("**/ckpt-*")) and not Path(out).exists():
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
    wait_jobs([job], timeout=400)
    log = "".join(p.read_text() for p in (tmp_path / "slurm.slurm").glob("slurm-*.out"))
    assert "requeueing" in log and "resum" in log, log[-2000:]
    a = (Path(reference) / "model.safetensors").read_bytes()
    b = (Path(out) / "model.safetensors").read_bytes()
    assert a == b, "the requeued, resumed run must end with the same weights"


@pytest.mark.slurm
@pytest.mark.slow
def test_two_processes_under_slurm_match_one(local_slurm, tmp_path, tiny_tokens, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one, _ = cli(*_pretrain_args(tiny_tokens, tmp_path / "one", "train.batch_size=8"))
    two, _ = cli(
        *_pretrain_args(tiny_tokens, tmp_path / "two"),
        "--slurm",
        "--slurm-set",
        "procs_per_node=2",
        "--slurm-set",
        "master_port=29611",
    )
    wait_jobs([(tmp_path / "two.slurm" / "jobid").read_text().strip()], timeout=400)
    m1, m2 = artifact.read_manifest(one), artifact.read_manifest(two)
    assert m2["host"]["world_size"] == 2 and m2["metrics"]["tokens"] == m1["metrics"]["tokens"]
    assert m2["metrics"]["final_val_loss"] == pytest.approx(
        m1["metrics"]["final_val_loss"], rel=0.1
    )
