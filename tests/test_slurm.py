"""Slurm: rendering (always), and chains and arrays against a real local Slurm (marker
`slurm`; scripts/local-slurm.sh starts it, as .ci/run does)."""

import os
import shutil
import subprocess
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
        ["python", "-m", "stages.app", *map(str, args)],
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
            f"{shutil.which('python')} -m stages.app tokenize m={tiny_corpus['math']} "
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
