"""Bridge to EleutherAI's lm-evaluation-harness (`lm_eval` 0.4.x Python API).

`run_harness` evaluates a model artifact on lm-eval tasks and returns its results plus
per-sample rows, which the eval stage stores in its own artifact. Local tasks work
offline: give a folder of task YAML files (`include_path`); data files named in them
with relative paths (e.g. `dataset_path: json` with `data_files: items.jsonl`) are read
relative to that folder. Tasks from the Hugging Face hub need a machine that can reach it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from llmforge.errors import BadInput


@dataclass(frozen=True)
class HarnessConfig:
    """Which lm-eval tasks to run and how."""

    tasks: tuple[str, ...] = ()
    num_fewshot: int | None = None
    limit: int | None = None
    batch_size: int = 8
    apply_chat_template: bool = False
    include_defaults: bool = False


@contextlib.contextmanager
def _cwd(path: Path | None):
    if path is None:
        yield
        return
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_harness(
    model_path: str | Path,
    cfg: HarnessConfig,
    include_path: Path | None = None,
    device: str = "cpu",
) -> tuple[dict, dict[str, list[dict]]]:
    """lm-eval results per task and per-sample rows per task, for one model directory."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    # Indexing lm-eval's thousands of bundled task YAMLs takes minutes on a busy CPU; with a
    # local task folder we skip it unless asked to keep them.
    manager = TaskManager(
        include_path=str(include_path) if include_path else None,
        include_defaults=include_path is None or cfg.include_defaults,
    )
    unknown = [t for t in cfg.tasks if t not in manager.all_tasks]
    if unknown:
        where = f" under {include_path}" if include_path else ""
        raise BadInput(
            f"lm-eval does not know task(s) {unknown}{where}; give a folder of task "
            "YAML as harness=PATH (hub tasks need a machine that reaches the hub)"
        )
    with _cwd(include_path if include_path and include_path.is_dir() else None):
        out = lm_eval.simple_evaluate(
            model="hf",
            model_args={"pretrained": str(model_path), "device": device, "dtype": "float32"},
            tasks=list(cfg.tasks),
            num_fewshot=cfg.num_fewshot,
            limit=cfg.limit,
            batch_size=cfg.batch_size,
            task_manager=manager,
            log_samples=True,
            apply_chat_template=cfg.apply_chat_template,
        )
    results = {task: _clean(metrics) for task, metrics in out["results"].items()}
    samples = {task: [_sample_row(s) for s in rows] for task, rows in out["samples"].items()}
    return results, samples


def _clean(metrics: dict) -> dict:
    """Metric names without lm-eval's `,none` filter suffix; non-numbers dropped."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key.removesuffix(",none")] = value
    return out


def _sample_row(sample: dict) -> dict:
    """A JSON-able per-sample row: document, target, responses and metric values."""
    keep = ("doc_id", "doc", "target", "filtered_resps")
    row = {k: sample.get(k) for k in keep}
    row["metrics"] = {m: sample.get(m) for m in sample.get("metrics", [])}
    return _jsonable(row)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
