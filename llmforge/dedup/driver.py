"""Run a whole dedup from the library: validate and ingest the inputs in this process
(so bad input fails fast with file and line, before any work), then run the datatrove
part in a child process (`llmforge.dedup.runner`, which has the `__main__` guard
datatrove's forkserver workers need) and return its report.

    report = dedup(cfg, corpus_paths, eval_paths, out_dir, work_dir)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from llmforge import config as cfglib
from llmforge.dedup.config import DedupConfig
from llmforge.dedup.inputs import corpus_files, ingest, load_eval_items, write_eval_index_source
from llmforge.dedup.layout import Layout
from llmforge.errors import RunFailed


def prepare(cfg: DedupConfig, corpus: list[Path], evals: list[Path], layout: Layout) -> float:
    """Validate and shard the corpus, and write the eval items; skipped when already done.

    Returns the seconds it took (0 on a resumed run)."""
    marker = layout.work / "ingest.json"
    if marker.is_file():
        return 0.0
    start = time.perf_counter()
    if cfg.quality.language:
        from llmforge.dedup.langid import check_available

        check_available(cfg.quality.language_model)
    items = [item for path in evals for item in load_eval_items(path)]
    files = [f for path in corpus for f in corpus_files(path)]
    stats = ingest(files, layout.input, cfg.executor.workers, cfg.default_domain)
    write_eval_index_source(items, layout.evals)
    summary = {
        "docs": stats.docs,
        "bytes": stats.bytes,
        "domains": stats.domains,
        "eval_items": len(items),
    }
    marker.write_text(json.dumps(summary))  # written last: it marks the ingest as complete
    return time.perf_counter() - start


def dedup(
    cfg: DedupConfig, corpus: list[Path], evals: list[Path], out_dir: Path, work_dir: Path
) -> dict:
    """Clean `corpus` into `out_dir` (documents/, removed/, report.json); return the report."""
    layout = Layout(work_dir)
    layout.work.mkdir(parents=True, exist_ok=True)
    ingest_seconds = prepare(cfg, corpus, evals, layout)
    plan = {
        "config": cfglib.to_dict(cfg),
        "work": str(layout.work),
        "out": str(out_dir),
        "has_evals": bool(evals),
        "ingest_seconds": ingest_seconds,
    }
    plan_path = layout.work / "plan.json"
    plan_path.write_text(json.dumps(plan))
    run_child(plan_path, layout.work / "runner.log")
    return json.loads((Path(out_dir) / "report.json").read_text())


def run_child(plan_path: Path, log_path: Path) -> None:
    """Run `python -m llmforge.dedup.runner`; datatrove's chatter goes to `log_path`."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with open(log_path, "ab") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "llmforge.dedup.runner", str(plan_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise RunFailed(
            f"dedup worker exited with {proc.returncode}; log {log_path}:\n" + "\n".join(tail)
        )
