"""Proxy training: one small model per mixture, trained with the pretrain engine.

Each proxy is a task file `proxies/<name>.task.json` in the run's work directory and
leaves a result file `proxies/<name>.json` (written atomically, last). A proxy with a
result is never trained again, so a re-run after a crash or preemption trains only the
missing ones. Tasks run as local worker processes (`run_local`) or as a Slurm job array
(`run_slurm`); both execute `run_task`, the array through `python -m llmforge.regmix.worker`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

from llmforge import config as configlib
from llmforge import log
from llmforge.regmix.config import ProxyConfig


def result_path(task: Path) -> Path:
    return task.with_name(task.name.removesuffix(".task.json") + ".json")


def write_task(folder: Path, name: str, weights: dict[str, float], tokens: list[Path],
               proxy: ProxyConfig, vocab_size: int, eval_spec: dict | None = None) -> Path:  # fmt: skip
    """Describe one proxy run in a JSON file a worker process (or array task) can execute.

    `weights` are token shares, the unit the pretrain loader reads; `eval_spec` (from
    `evalsuite.suite_spec`) is an eval suite to run on the trained proxy.
    """
    folder.mkdir(parents=True, exist_ok=True)
    model = replace(proxy.model, vocab_size=vocab_size)
    task = {
        "name": name,
        "weights": weights,
        "tokens": [str(p) for p in tokens],
        "proxy": configlib.to_dict(replace(proxy, model=model)),
        "eval": eval_spec,
    }
    path = folder / f"{name}.task.json"
    _write_json(path, task)
    return path


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def pending(tasks: list[Path]) -> list[Path]:
    return [t for t in tasks if not result_path(t).is_file()]


def read_result(task: Path) -> dict:
    return json.loads(result_path(task).read_text(encoding="utf-8"))


def train_spec(task: dict, proxy: ProxyConfig):
    """The pretrain engine's TrainSpec for one proxy: one data stage with the task's mixture."""
    from llmforge.data.loader import DataConfig
    from llmforge.data.mixture import MixtureStage
    from llmforge.train.config import OptimConfig, ScheduleConfig, SpikeConfig, TrainConfig
    from llmforge.train.engine import TrainSpec

    weights = {d: w for d, w in task["weights"].items() if w > 0}
    total = sum(weights.values())
    data = DataConfig(
        stages=[MixtureStage(weights={d: w / total for d, w in weights.items()})],
        val_batches=proxy.val_batches,
    )
    train = TrainConfig(
        steps=proxy.steps, batch_size=proxy.batch_size, seq_len=proxy.seq_len,
        precision=proxy.precision, seed=proxy.seed, log_every=proxy.steps,
        checkpoint_every=proxy.checkpoint_every, peak_probe_s=0.0,
    )  # fmt: skip
    schedule = ScheduleConfig(warmup_steps=min(proxy.warmup_steps, proxy.steps - 1))
    return TrainSpec(data=data, train=train, optim=OptimConfig(lr=proxy.lr),
                     schedule=schedule, spike=SpikeConfig(policy="off"),
                     tokens=[Path(p) for p in task["tokens"]])  # fmt: skip


def run_task(task_path: str | Path) -> dict:
    """Train the proxy a task file describes and write its result file; returns the result."""
    from llmforge.artifact import Run
    from llmforge.model.gpt import GPT
    from llmforge.train.engine import seed_everything, train_model

    task_path = Path(task_path)
    task = json.loads(task_path.read_text(encoding="utf-8"))
    proxy = configlib.from_dict(ProxyConfig, task["proxy"])
    scratch = Run(task_path.parent / "runs" / task["name"], task["name"], "model",
                  "regmix-proxy", {}, [])  # fmt: skip
    started = time.perf_counter()
    seed_everything(proxy.seed)
    model = GPT(proxy.model)
    model, metrics = train_model(model, train_spec(task, proxy), scratch)
    result = {
        "name": task["name"],
        "weights": task["weights"],
        "val_loss_per_domain": metrics["val_loss_per_domain"],
        "val_loss": metrics.get("final_val_loss"),
        "train_loss": metrics.get("final_train_loss"),
        "domain_shares": metrics["domain_shares"],
        "tokens": metrics["tokens"],
        "params": metrics["params"],
    }
    if task.get("eval"):
        result["eval"] = _evaluate(model, task, scratch.dir)
    result["seconds"] = round(time.perf_counter() - started, 3)
    _write_json(result_path(task_path), result)
    shutil.rmtree(scratch.dir, ignore_errors=True)
    return result


def _evaluate(model, task: dict, scratch: Path) -> dict:
    """Export the proxy with the tokens' tokenizer and run the eval suite on it."""
    from llmforge.model.hf import export_hf
    from llmforge.regmix.evalsuite import evaluate_proxy

    export_hf(model, scratch / "model", Path(task["tokens"][0]) / "tokenizer")
    return evaluate_proxy(scratch / "model", task["eval"], scratch / "samples")


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    log.set_quiet(True)


def run_local(tasks: list[Path], workers: int, threads: int) -> None:
    """Train the pending tasks in `workers` processes (0 = as many as the cores allow)."""
    todo = pending(tasks)
    if not todo:
        return
    workers = min(workers or max(1, (os.cpu_count() or 1) // threads), len(todo))
    log.info(f"training {len(todo)} proxies in {workers} local process(es)")
    ctx = get_context("spawn")  # fork after torch's thread pools start can deadlock
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads,)) as pool:  # fmt: skip
        futures = {pool.submit(run_task, str(t)): t for t in todo}
        for done, future in enumerate(as_completed(futures), 1):
            result = future.result()
            log.info(
                f"proxy {result['name']} ({done}/{len(todo)}): val loss "
                f"{result['val_loss']:.4f} in {result['seconds']:.1f}s"
            )


def array_commands(tasks: list[Path], threads: int) -> str:
    """One shell line per task: the worker on that task file (PYTHONPATH kept for checkouts)."""
    from llmforge import slurm

    return slurm.module_commands("llmforge.regmix.worker", [str(t) for t in tasks], threads)


def run_slurm(tasks: list[Path], cfg, threads: int, folder: Path) -> None:
    """Submit the pending tasks as one job array, wait for it, and fail naming missing proxies.

    `cfg` is a `slurm.ArrayConfig`. A job id left by an earlier attempt that is still queued
    is waited on instead of submitting again.
    """
    from llmforge import slurm
    from llmforge.errors import RunFailed

    todo = pending(tasks)
    missing = slurm.run_array("llmforge-regmix-proxies", array_commands(todo, threads),
                              len(todo), cfg, folder, lambda: pending(tasks))  # fmt: skip
    if missing:
        names = ", ".join(t.name.removesuffix(".task.json") for t in missing)
        job = (folder / "slurm-jobid").read_text().strip()
        raise RunFailed(
            f"Slurm job {job} ended without results for proxies {names} (logs: {folder}); "
            "re-run the same command to retrain only those"
        )
