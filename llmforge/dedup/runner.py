"""The dedup worker process: `python -m llmforge.dedup.runner PLAN.json`.

datatrove's executors start workers with forkserver, which re-imports the main module;
without an `if __name__ == "__main__":` guard the workers respawn forever. Running the
datatrove part in this module as its own process gives that guard whether the stage was
called from the `llmforge` script, `python -m stages.app` or pytest.

The plan (written by `llmforge.dedup.driver`) names the config, the work directory (the
ingested shards are already there) and the output directory. This process runs the
datatrove steps, then semantic dedup, then writes `documents/`, `removed/` and
`report.json` into the output directory.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

import multiprocess
import orjson

from llmforge import config as cfglib
from llmforge.dedup import semantic
from llmforge.dedup.config import DedupConfig
from llmforge.dedup.executors import run_steps
from llmforge.dedup.layout import Layout
from llmforge.dedup.pipeline import build_steps
from llmforge.dedup.report import (
    build_report,
    collect_removed,
    folder_size,
    sample_of,
    write_kept,
)

STEP_GROUPS = {"filter": ("filter",), "exact": ("exact-", "route"), "minhash": ("minhash-",)}


def _load_timings(path: Path) -> dict[str, float]:
    return json.loads(path.read_text()) if path.is_file() else {}


def run_datatrove(cfg: DedupConfig, layout: Layout, has_evals: bool) -> dict[str, float]:
    """Run every datatrove step; timings accumulate over resumed attempts."""
    for folder in (
        layout.filtered,
        layout.to_minhash,
        layout.passthrough,
        layout.deduped,
        layout.removed,
    ):
        folder.mkdir(parents=True, exist_ok=True)
    timings_path = layout.work / "timings.json"
    timings = _load_timings(timings_path)
    for name, secs in run_steps(
        build_steps(cfg, layout, has_evals), cfg.executor, layout.logs
    ).items():
        timings[name] = round(timings.get(name, 0.0) + secs, 3)
    timings_path.write_text(json.dumps(timings))
    return timings


def run_semantic(cfg: DedupConfig, layout: Layout) -> tuple[dict, tuple[float, int, int]]:
    """Embed the surviving documents of eligible domains and find semantic duplicates.

    Returns {(file relative to work, line index): id of the kept document it duplicates}
    and (seconds, documents in, jsonl bytes in).
    The result is cached in the work directory so a resumed run does not embed again.
    """
    sc = cfg.semantic
    done = layout.semantic / "drops.json"
    if done.is_file():
        cached = json.loads(done.read_text())
        return {(f, i): m for f, i, m in cached["drops"]}, (
            cached["seconds"],
            cached["docs_in"],
            cached["bytes"],
        )
    start = time.perf_counter()
    rows, size = _eligible_rows(layout, set(sc.skip_domains))
    drops = {}
    if len(rows) > 1:
        layout.semantic.mkdir(parents=True, exist_ok=True)
        encoder = semantic.Encoder(semantic.encoder_dir(sc.encoder), sc.max_tokens)
        emb = semantic.embed_to_memmap(
            _texts(layout.work, rows),
            len(rows),
            encoder,
            layout.semantic / "emb.npy",
            sc.batch_size,
        )
        for dropped, kept in semantic.find_duplicates(emb, sc.threshold, sc.chunk_size).items():
            drops[(rows[dropped][0], rows[dropped][1])] = rows[kept][2]
    seconds = time.perf_counter() - start
    layout.semantic.mkdir(parents=True, exist_ok=True)
    payload = {
        "drops": [[f, i, m] for (f, i), m in drops.items()],
        "seconds": seconds,
        "docs_in": len(rows),
        "bytes": size,
    }
    done.write_text(json.dumps(payload))
    return drops, (seconds, len(rows), size)


def _eligible_rows(layout: Layout, skip: set[str]) -> tuple[list[tuple[str, int, str]], int]:
    """(file, line index, id) of every surviving document outside `skip`, in order, and
    their jsonl bytes."""
    size, rows = 0, []
    for folder in layout.kept_folders():
        for f in sorted(folder.glob("*.jsonl")):
            with open(f, "rb") as fh:
                for i, raw in enumerate(fh):
                    row = orjson.loads(raw)
                    if row["domain"] not in skip:
                        rows.append((str(f.relative_to(layout.work)), i, row["id"]))
                        size += len(raw)
    return rows, size


def _texts(work: Path, rows):
    """Stream the texts of `rows` (sorted by file then line) back from disk."""
    wanted: dict[str, set[int]] = {}
    for f, i, _ in rows:
        wanted.setdefault(f, set()).add(i)
    for f in wanted:  # insertion order is the order of `rows`
        with open(work / f, "rb") as fh:
            for i, raw in enumerate(fh):
                if i in wanted[f]:
                    yield orjson.loads(raw)["text"]


def method_table(
    layout: Layout, timings: dict[str, float], sem: tuple[float, int, int] | None
) -> dict:
    """Seconds, documents in and throughput per method (jsonl bytes for MB/s)."""
    sources = {"filter": layout.input, "exact": layout.filtered, "minhash": layout.to_minhash}
    methods = {}
    for name, prefixes in STEP_GROUPS.items():
        secs = sum(v for k, v in timings.items() if k.startswith(prefixes))
        if not any(k.startswith(prefixes) for k in timings):
            continue
        docs, size = folder_size(sources[name])
        methods[name] = _rates(secs, docs, size)
    if "slurm_total" in timings:  # one chain of jobs: only its total time is known
        methods["slurm"] = _rates(timings["slurm_total"], *folder_size(layout.input))
    if sem is not None:
        methods["semantic"] = _rates(*sem)
    return methods


def _rates(secs: float, docs: int, size: int) -> dict:
    secs = max(secs, 1e-9)
    return {
        "seconds": round(secs, 3),
        "docs_in": docs,
        "docs_per_s": round(docs / secs, 1),
        "mb_per_s": round(size / 1e6 / secs, 3),
    }


def assemble(
    cfg: DedupConfig, layout: Layout, out_dir: Path, drops, methods, seconds: float
) -> dict:
    """Write `documents/`, `removed/` and `report.json`; return the report."""
    ingest = json.loads((layout.work / "ingest.json").read_text())
    (out_dir / "removed").mkdir(parents=True, exist_ok=True)
    kept, sem_tally = write_kept(layout, out_dir, drops)
    removed, samples, hits = collect_removed(layout, out_dir, cfg.samples_per_reason)
    if sem_tally.docs:
        removed["semantic"] = sem_tally
        with open(out_dir / "removed" / "semantic.jsonl", "rb") as f:
            lines = itertools.islice(f, cfg.samples_per_reason)
            samples["semantic"] = [sample_of(orjson.loads(line)) for line in lines]
    else:
        (out_dir / "removed" / "semantic.jsonl").unlink()
    report = build_report(ingest, kept, removed, samples, hits, methods, seconds)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    return report


# Imported once by the forkserver, so the workers of every step fork with them loaded
# instead of each paying for spacy's import (seconds) again.
FORKSERVER_PRELOAD = ["numpy", "spacy", "datatrove.pipeline.dedup", "llmforge.dedup.filters"]


def main(plan_path: str) -> int:
    multiprocess.set_forkserver_preload(FORKSERVER_PRELOAD)
    plan = json.loads(Path(plan_path).read_text())
    cfg = cfglib.from_dict(DedupConfig, plan["config"])
    layout, out_dir = Layout(Path(plan["work"])), Path(plan["out"])
    start = time.perf_counter()
    timings = run_datatrove(cfg, layout, plan["has_evals"])
    drops, sem = {}, None
    if cfg.semantic.enabled:
        drops, sem = run_semantic(cfg, layout)
    methods = method_table(layout, timings, sem)
    seconds = time.perf_counter() - start + plan.get("ingest_seconds", 0.0)
    assemble(cfg, layout, out_dir, drops, methods, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
