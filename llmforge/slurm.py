"""Slurm: render sbatch scripts for any stage, submit them, chain them, requeue on preemption.

`llmforge STAGE ... --slurm` renders `OUT.slurm/job.sbatch` and submits it. The script runs
the very same command inside the allocation (through torchrun when it launches several
processes), so the artifact contract holds unchanged: the job publishes OUT atomically, a
requeued job resumes from OUT.partial, and a re-submission of a finished stage is a cache
hit that submits nothing.

Dependencies are inferred from the inputs: an input path that does not exist yet but has a
submitted job (`PATH.slurm/jobid`) becomes `--dependency=afterok:JOBID`. So a chain is
just a shell script of `X=$(llmforge STAGE ... --slurm)` lines.

Preemption: the job asks Slurm for `--signal=B:USR1@N` and `--requeue`. The batch shell
traps USR1 (or TERM), forwards SIGTERM to the stage, which checkpoints and exits, and then
the shell requeues the job; the rerun resumes from the checkpoint.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llmforge.config import check, param
from llmforge.errors import BadInput

SLURM_DIR_SUFFIX = ".slurm"


@dataclass(frozen=True)
class SlurmConfig:
    nodes: int = param(1, "number of nodes")
    gpus_per_node: int = param(0, "GPUs per node (0 on CPU clusters)")
    procs_per_node: int = param(0, "processes per node; 0 means one per GPU, or 1 without GPUs")
    cpus_per_task: int = param(2, "CPUs for each node's launcher task")
    mem: str = param("", "memory per node, e.g. 64G (empty: cluster default)")
    time: str = param("01:00:00", "wall-time limit")
    partition: str = param("", "partition (empty: cluster default)")
    account: str = param("", "account to charge (empty: none)")
    job_name: str = param("", "job name (empty: llmforge-STAGE)")
    extra: list[str] = param([], "extra '#SBATCH' lines, e.g. ['--qos=high']")
    launcher: Literal["auto", "torchrun", "accelerate", "python"] = param(
        "auto", "how processes start: auto = torchrun when more than one process in all"
    )
    requeue: bool = param(True, "requeue the job when it is preempted or signalled")
    signal_lead_s: int = param(120, "send USR1 this many seconds before the time limit")
    master_port: int = param(29500, "rendezvous port on the first node")
    nccl_env: dict[str, str] = param(
        {"NCCL_ASYNC_ERROR_HANDLING": "1", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"},
        "NCCL environment exported before the launch",
    )
    setup: list[str] = param([], "shell lines run first, e.g. 'source .venv/bin/activate'")

    def __post_init__(self):
        check(self.nodes >= 1, "nodes", "must be >= 1")
        check(self.gpus_per_node >= 0, "gpus_per_node", "must be >= 0")
        check(self.procs_per_node >= 0, "procs_per_node", "must be >= 0")
        check(self.signal_lead_s >= 0, "signal_lead_s", "must be >= 0")

    @property
    def nprocs(self) -> int:
        return self.procs_per_node or self.gpus_per_node or 1

    @property
    def launch(self) -> str:
        if self.launcher != "auto":
            return self.launcher
        return "torchrun" if self.nodes * self.nprocs > 1 else "python"


def job_dir(out: Path) -> Path:
    return out.with_name(out.name + SLURM_DIR_SUFFIX)


def pending_job(path: Path) -> str | None:
    """The job id producing `path`, when `path` does not exist yet but was submitted."""
    jobfile = job_dir(Path(path)) / "jobid"
    if not Path(path).exists() and jobfile.is_file():
        return jobfile.read_text().strip()
    return None


def _header(
    cfg: SlurmConfig, name: str, logs: Path, array: str | None = None, tasks_per_node: int = 1
) -> list[str]:
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={cfg.job_name or name}",
        f"#SBATCH --nodes={cfg.nodes}",
        f"#SBATCH --ntasks-per-node={tasks_per_node}",
        f"#SBATCH --cpus-per-task={cfg.cpus_per_task}",
        f"#SBATCH --time={cfg.time}",
        f"#SBATCH --output={logs}/slurm-%j.out"
        if array is None
        else f"#SBATCH --output={logs}/slurm-%A_%a.out",
        "#SBATCH --open-mode=append",
    ]
    if cfg.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={cfg.gpus_per_node}")
    for key, value in (("mem", cfg.mem), ("partition", cfg.partition), ("account", cfg.account)):
        if value:
            lines.append(f"#SBATCH --{key}={value}")
    if array:
        lines.append(f"#SBATCH --array={array}")
    if cfg.requeue:
        lines += ["#SBATCH --requeue", f"#SBATCH --signal=B:USR1@{cfg.signal_lead_s}"]
    lines += [f"#SBATCH {x}" if x.startswith("--") else f"#SBATCH --{x}" for x in cfg.extra]
    return lines


def _launch(cfg: SlurmConfig, argv: list[str]) -> str:
    """The command each node runs: one python, or torchrun/accelerate with rendezvous."""
    python = shlex.quote(sys.executable)
    stage_cmd = " ".join(shlex.quote(a) for a in argv)
    if cfg.launch == "python":
        return f"srun --kill-on-bad-exit=1 {python} -m stages.app {stage_cmd}"
    if cfg.launch == "accelerate":
        return "srun --kill-on-bad-exit=1 bash -c " + shlex.quote(
            f"{python} -m accelerate.commands.launch --multi_gpu "
            f"--num_machines $SLURM_NNODES --num_processes $(( SLURM_NNODES * {cfg.nprocs} )) "
            "--machine_rank $SLURM_NODEID --main_process_ip $MASTER_ADDR "
            f"--main_process_port $MASTER_PORT -m stages.app {stage_cmd}"
        )
    return (
        f"srun --kill-on-bad-exit=1 {python} -m torch.distributed.run "
        f"--nnodes=$SLURM_NNODES --nproc-per-node={cfg.nprocs} --rdzv-backend=c10d "
        f"--rdzv-endpoint=$MASTER_ADDR:$MASTER_PORT --rdzv-id=$SLURM_JOB_ID "
        f"-m stages.app {stage_cmd}"
    )


# The trap forwards preemption to the stage as SIGTERM (the stage checkpoints and exits),
# then requeues; `wait` is called twice because a trapped signal interrupts the first.
_BODY = """\
preempted=0
on_signal() {{ preempted=1; echo "llmforge: preemption signal, checkpointing" >&2; kill -TERM "$child" 2>/dev/null || true; }}
trap on_signal USR1 TERM
{launch} &
child=$!
wait "$child"; rc=$?
if [ "$preempted" = 1 ]; then
    wait "$child" 2>/dev/null || true
    {requeue}
fi
exit $rc
"""


def render_job(cfg: SlurmConfig, stage: str, argv: list[str], out: Path, cwd: Path) -> str:
    """The sbatch script that runs `llmforge STAGE argv...` for output `out`."""
    lines = _header(cfg, f"llmforge-{stage}", job_dir(out))
    lines += ["set -uo pipefail", f"cd {shlex.quote(str(cwd))}", *cfg.setup]
    lines += _env_lines(cfg)
    requeue = (
        'echo "llmforge: requeueing $SLURM_JOB_ID" >&2; scontrol requeue "$SLURM_JOB_ID"; exit 0'
        if cfg.requeue
        else "exit 1"
    )
    lines.append(_BODY.format(launch=_launch(cfg, argv), requeue=requeue))
    return "\n".join(lines) + "\n"


def _env_lines(cfg: SlurmConfig) -> list[str]:
    lines = [
        'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"export MASTER_PORT={cfg.master_port}",
        "export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}",
        "export PYTHONUNBUFFERED=1",
    ]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(cfg.nccl_env.items())]
    return lines


def render_array(
    cfg: SlurmConfig,
    name: str,
    commands_file: Path,
    n_tasks: int,
    logs: Path,
    cwd: Path,
    max_parallel: int = 0,
) -> str:
    """An array job running line $SLURM_ARRAY_TASK_ID (0-based) of `commands_file`."""
    spec = f"0-{n_tasks - 1}" + (f"%{max_parallel}" if max_parallel else "")
    lines = _header(cfg, name, logs, array=spec)
    lines += ["set -uo pipefail", f"cd {shlex.quote(str(cwd))}", *cfg.setup, *_env_lines(cfg)]
    launch = (
        'cmd=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" '
        f'{shlex.quote(str(commands_file))}); srun bash -c "$cmd"'
    )
    requeue = 'scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"; exit 0'
    lines.append(_BODY.format(launch=launch, requeue=requeue if cfg.requeue else "exit 1"))
    return "\n".join(lines) + "\n"


def render_service(cfg: SlurmConfig, name: str, task: str, logs: Path, cwd: Path) -> str:
    """A job running the shell line `task` once per process slot (`procs_per_node` on each
    node), for services such as inference servers. It has no requeue trap: whoever uses
    the service decides what happens when it goes away. `$SLURM_PROCID` and
    `$SLURM_LOCALID` tell the tasks apart; GPUs are split evenly between a node's tasks."""
    lines = _header(cfg, name, logs, tasks_per_node=cfg.nprocs)
    lines = [ln for ln in lines if "--requeue" not in ln and "--signal=" not in ln]
    lines += ["set -uo pipefail", f"cd {shlex.quote(str(cwd))}", *cfg.setup, *_env_lines(cfg)]
    gpus = f" --gpus-per-task={cfg.gpus_per_node // cfg.nprocs}" if cfg.gpus_per_node else ""
    lines.append(
        f"srun --ntasks={cfg.nodes * cfg.nprocs} --ntasks-per-node={cfg.nprocs}{gpus} "
        f"bash -c {shlex.quote(task)}"
    )
    return "\n".join(lines) + "\n"


def submit(script: Path, dependencies: list[str] = ()) -> str:
    """sbatch the script and return the job id."""
    cmd = ["sbatch", "--parsable"]
    if dependencies:
        cmd.append("--dependency=afterok:" + ":".join(dependencies))
    try:
        result = subprocess.run([*cmd, str(script)], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise BadInput("sbatch not found: is this a Slurm login node?") from None
    if result.returncode != 0:
        raise BadInput(f"sbatch refused the job: {result.stderr.strip()}", path=str(script))
    return result.stdout.strip().split(";")[0]


# ---------------------------------------------------------------- arrays the stages wait on


@dataclass(frozen=True)
class ArrayConfig:
    """Run a stage's tasks as one Slurm job array (instead of local processes) and wait."""

    enabled: bool = param(False, "submit one array task per pending task and wait for them")
    max_parallel: int = param(0, "array throttle (%N); 0 = no limit")
    poll_s: float = param(10.0, "seconds between checks for finished tasks")
    job: SlurmConfig = param(SlurmConfig(cpus_per_task=1), "resources of each array task")

    def __post_init__(self):
        check(self.max_parallel >= 0, "max_parallel", "must be >= 0")
        check(self.poll_s > 0, "poll_s", "must be > 0")


def module_commands(module: str, args: list[str], threads: int = 1) -> str:
    """One shell line per argument: `python -m MODULE ARG`, this checkout on PYTHONPATH."""
    root = Path(__file__).resolve().parents[1]
    env = (
        f"OMP_NUM_THREADS={threads} "
        f"PYTHONPATH={shlex.quote(str(root))}${{PYTHONPATH:+:$PYTHONPATH}}"
    )
    python = shlex.quote(sys.executable)
    return "".join(f"{env} {python} -m {module} {shlex.quote(a)}\n" for a in args)


def job_queued(job: str) -> bool:
    """True while any task of the job is pending or running."""
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    return out.returncode == 0 and bool(out.stdout.strip())


def run_array(name: str, commands: str, n_tasks: int, cfg: ArrayConfig, folder: Path,
              pending: Callable[[], list]) -> list:  # fmt: skip
    """Submit `commands` (one line per task) as an array job and wait for it.

    A job id left in `folder` by an earlier attempt that is still queued is waited on
    instead of submitting again. Returns what `pending()` still lists once the job has
    left the queue (empty: every task finished).
    """
    import time

    from llmforge import log

    if not pending():
        return []
    jobfile = folder / "slurm-jobid"
    job = jobfile.read_text().strip() if jobfile.is_file() else ""
    if not (job and job_queued(job)):
        lines = folder / "slurm-commands.txt"
        lines.write_text(commands, encoding="utf-8")
        script = folder / f"{name}.sbatch"
        script.write_text(render_array(cfg.job, name, lines, n_tasks, folder, Path.cwd(),
                                       cfg.max_parallel), encoding="utf-8")  # fmt: skip
        job = submit(script)
        jobfile.write_text(job + "\n")
        log.info(f"submitted {n_tasks} tasks as Slurm array job {job}")
    while pending() and job_queued(job):
        time.sleep(cfg.poll_s)
    return pending()
