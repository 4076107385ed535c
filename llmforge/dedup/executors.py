"""Run the dedup steps on a datatrove executor: `LocalPipelineExecutor` with N workers, or
`SlurmPipelineExecutor` jobs chained with dependencies.

datatrove writes a completion marker per finished task under each step's logging folder
(`work/logs/<step>/completions/`); a re-run after a crash skips those tasks. This module
must only be used from a process whose entry point sits behind `if __name__ ==
"__main__":` (datatrove's executor starts workers with forkserver): `llmforge.dedup.runner`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor

from llmforge.dedup.config import ExecutorConfig
from llmforge.dedup.pipeline import Step
from llmforge.errors import RunFailed


def _done(logs: Path, step: Step) -> int:
    completions = logs / step.name / "completions"
    return len(list(completions.iterdir())) if completions.is_dir() else 0


def run_local(steps: list[Step], ex: ExecutorConfig, logs: Path) -> dict[str, float]:
    """Run the steps one after another; return the seconds each took (0 when skipped)."""
    timings = {}
    for step in steps:
        start = time.perf_counter()
        executor = LocalPipelineExecutor(
            step.pipeline,
            tasks=step.tasks,
            workers=min(ex.workers, step.tasks),
            logging_dir=str(logs / step.name),
        )
        executor.run()
        if _done(logs, step) < step.tasks:
            raise RunFailed(f"datatrove step '{step.name}' did not finish; see {logs / step.name}")
        timings[step.name] = round(time.perf_counter() - start, 3)
    return timings


def run_slurm(
    steps: list[Step], ex: ExecutorConfig, logs: Path, poll_s: float = 5
) -> dict[str, float]:
    """Submit the steps as dependent Slurm array jobs and wait for the last to finish."""
    executors, previous = [], None
    start = time.perf_counter()
    for step in steps:
        previous = SlurmPipelineExecutor(
            step.pipeline,
            tasks=step.tasks,
            time=ex.time,
            partition=ex.partition,
            cpus_per_task=ex.cpus_per_task,
            job_name=f"dedup-{step.name}",
            venv_path=str(Path(sys.prefix) / "bin" / "activate"),
            logging_dir=str(logs / step.name),
            depends=previous,
        )
        executors.append(previous)
    previous.run()  # launches the whole chain through the dependencies
    job_ids = [str(e.job_id) for e in executors if e.job_id not in (None, -1)]
    last = steps[-1]
    while _done(logs, last) < last.tasks:
        if job_ids and not _queued(job_ids):
            time.sleep(poll_s)  # the last marker may land just after the job leaves the queue
            if _done(logs, last) < last.tasks:
                raise RunFailed(f"slurm jobs {','.join(job_ids)} ended unfinished; see {logs}")
        time.sleep(poll_s)
    return {"slurm_total": round(time.perf_counter() - start, 3)}


def _queued(job_ids: list[str]) -> bool:
    """Whether any of the jobs is still pending or running."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)], capture_output=True, text=True
    )
    return bool(out.stdout.strip())


def run_steps(steps: list[Step], ex: ExecutorConfig, logs: Path) -> dict[str, float]:
    if ex.kind == "slurm":
        return run_slurm(steps, ex, logs)
    return run_local(steps, ex, logs)
