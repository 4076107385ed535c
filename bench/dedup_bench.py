"""Benchmark of `llmforge dedup`: docs/s and MB/s per method, our MinHash against
datatrove's own MinHash pipeline run directly on the same shards and workers (time ratio
and whether the removal sets are equal), and peak memory.

    PYTHONPATH=. python bench/dedup_bench.py [--docs 50000] [--workers 2]

The corpus is built offline: chunks of the Python standard library's source (code),
its docstrings (prose), random-word text (web) and generated arithmetic (math), plus
planted exact and near copies. Each variant runs in its own process so its peak RSS
(largest process, including datatrove's workers) is its own.
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import re
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the corpus


def stdlib_texts(limit_files: int = 400) -> tuple[list[str], list[str]]:
    """(code chunks, docstrings) from the standard library's own source files."""
    code, prose = [], []
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:limit_files]
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        code += ["\n".join(lines[i : i + 12]) for i in range(0, len(lines), 12)]
        prose += [inspect.cleandoc(d) for d in re.findall(r'"""(.{150,900}?)"""', text, re.S)]
    return [c for c in code if len(c) > 150], prose


def build_corpus(n_docs: int, path: Path, seed: int = 0) -> dict:
    rng = random.Random(seed)
    code, prose = stdlib_texts()
    vocab = sorted({w for t in prose for w in re.findall(r"[a-z]{3,12}", t)})
    rows = []
    base = int(n_docs * 0.9)
    for i in range(base):
        kind = i % 10
        if kind < 3:
            text, domain = code[i % len(code)] + f"\n# {i}", "code"
        elif kind < 5:
            text, domain = prose[i % len(prose)] + f" ({i})", "prose"
        elif kind < 9:
            text, domain = " ".join(rng.choice(vocab) for _ in range(rng.randint(40, 120))), "web"
        else:
            a, b = rng.randint(1, 999), rng.randint(1, 999)
            text, domain = (
                f"What is {a} times {b}? {a} * {b} = {a * b}. The answer is {a * b}.",
                "math",
            )
        rows.append({"id": f"d{i}", "text": text, "domain": domain})
    for j in range(n_docs - base):  # planted: half exact copies, half near copies
        src = rows[rng.randrange(base)]
        text = src["text"]
        if j % 2:
            words = text.split(" ")
            words[rng.randrange(len(words))] = "edited"
            text = " ".join(words)
        rows.append({"id": f"dup{j}", "text": text, "domain": src["domain"]})
    rng.shuffle(rows)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return {"docs": len(rows), "bytes": path.stat().st_size}


# ---------------------------------------------------------------- the variants (subprocesses)

MINHASH_ONLY = [
    "exact.enabled=false",
    "repetition.enabled=false",
    "decontam.enabled=false",
    "quality.gopher_repetition=false",
    "minhash.skip_domains=[]",
    "quality.min_chars=0",
]


def variant_ours(data: Path, work: Path, workers: int, sets: list[str]) -> dict:
    from llmforge import config
    from llmforge.dedup.config import DedupConfig
    from llmforge.dedup.driver import dedup

    cfg = config.load(DedupConfig, None, [f"executor.workers={workers}", *sets])
    start = time.perf_counter()
    report = dedup(cfg, [data / "corpus.jsonl"], [], work / "out", work / "out" / "_work")
    seconds = time.perf_counter() - start
    removed = work / "out" / "removed" / "minhash.jsonl"
    ids = sorted(json.loads(line)["id"] for line in open(removed)) if removed.exists() else []
    return {"seconds": seconds, "methods": report["methods"], "minhash_removed": ids}


def variant_datatrove(data: Path, work: Path, workers: int) -> dict:
    """datatrove's documented four-stage MinHash pipeline, on the same shards as ours."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    cfg, shards, w = MinhashConfig(), str(data / "shards"), str(work)

    def reader():
        return JsonlReader(shards, glob_pattern="*.jsonl", compression=None)

    def step(pipeline, tasks, name):
        LocalPipelineExecutor(
            pipeline, tasks=tasks, workers=min(workers, tasks), logging_dir=f"{w}/logs/{name}"
        ).run()

    start = time.perf_counter()
    step([reader(), MinhashDedupSignature(f"{w}/sigs", config=cfg)], workers, "1")
    step([MinhashDedupBuckets(f"{w}/sigs", f"{w}/buckets", config=cfg)], cfg.num_buckets, "2")
    step([MinhashDedupCluster(f"{w}/buckets", f"{w}/remove", config=cfg)], 1, "3")
    excl = JsonlWriter(f"{w}/removed", compression=None)
    step(
        [
            reader(),
            MinhashDedupFilter(f"{w}/remove", exclusion_writer=excl),
            JsonlWriter(f"{w}/kept", compression=None),
        ],
        workers,
        "4",
    )
    seconds = time.perf_counter() - start
    ids = sorted(
        json.loads(line)["id"] for f in Path(w, "removed").glob("*.jsonl") for line in open(f)
    )
    return {"seconds": seconds, "minhash_removed": ids}


def run_variant(name: str, data: Path, workers: int) -> dict:
    """Run one variant in a fresh process; add its peak RSS (MB, largest process)."""
    work = Path(tempfile.mkdtemp(prefix=f"dedup-bench-{name}-", dir=data))
    cmd = [sys.executable, __file__, "--variant", name, "--data", str(data), "--work", str(work)]
    cmd += ["--workers", str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    if proc.returncode != 0:
        raise SystemExit(f"variant {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _env() -> dict:
    import os

    return dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")


def child_main(args) -> None:
    data, work = Path(args.data), Path(args.work)
    if args.variant == "datatrove":
        result = variant_datatrove(data, work, args.workers)
    elif args.variant == "ours-minhash":
        result = variant_ours(data, work, args.workers, MINHASH_ONLY)
    elif args.variant == "ours-all":
        result = variant_ours(data, work, args.workers, [])
    else:  # semantic on a subset: the encoder is the slow part on CPU
        result = variant_ours(data / "subset", work, args.workers, ["semantic.enabled=true"])
    peak = max(
        resource.getrusage(r).ru_maxrss for r in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    result["peak_rss_mb"] = round(peak / 1024, 1)
    print(json.dumps(result))


# ---------------------------------------------------------------- the report


def shard(data: Path, workers: int) -> None:
    """Deal the corpus round-robin into `workers` files, exactly as our ingest does."""
    (data / "shards").mkdir()
    outs = [open(data / "shards" / f"{i:05d}.jsonl", "w") for i in range(workers)]
    with open(data / "corpus.jsonl") as f:
        for i, line in enumerate(f):
            outs[i % workers].write(line)
    for o in outs:
        o.close()


def subset(data: Path, n: int) -> None:
    (data / "subset").mkdir()
    with open(data / "corpus.jsonl") as f, open(data / "subset" / "corpus.jsonl", "w") as out:
        for _, line in zip(range(n), f, strict=False):
            out.write(line)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--docs", type=int, default=50_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--semantic-docs", type=int, default=2_000)
    p.add_argument("--variant")
    p.add_argument("--data")
    p.add_argument("--work")
    args = p.parse_args()
    if args.variant:
        return child_main(args)
    data = Path(tempfile.mkdtemp(prefix="dedup-bench-"))
    size = build_corpus(args.docs, data / "corpus.jsonl")
    shard(data, args.workers)
    subset(data, args.semantic_docs)
    print(
        f"corpus: {size['docs']} docs, {size['bytes'] / 1e6:.1f} MB, {args.workers} workers, in {data}"
    )
    results = {
        name: run_variant(name, data, args.workers)
        for name in ("datatrove", "ours-minhash", "ours-all", "ours-semantic")
    }
    print_tables(size, results)


def print_tables(size: dict, results: dict) -> None:
    dt, ours = results["datatrove"], results["ours-minhash"]
    print("\nMinHash (5-grams, 14x8), same shards and workers")
    print(f"{'variant':<28}{'seconds':>9}{'docs/s':>9}{'MB/s':>7}{'peak MB':>9}")
    for name, r, secs in (
        ("datatrove direct", dt, dt["seconds"]),
        ("ours (whole stage)", ours, ours["seconds"]),
        ("ours (MinHash steps)", ours, ours["methods"]["minhash"]["seconds"]),
    ):
        print(
            f"{name:<28}{secs:>9.1f}{size['docs'] / secs:>9.0f}{size['bytes'] / 1e6 / secs:>7.2f}{r['peak_rss_mb']:>9.0f}"
        )
    same = dt["minhash_removed"] == ours["minhash_removed"]
    print(
        f"speed ratio ours/datatrove: whole stage {dt['seconds'] / ours['seconds']:.2f}x, "
        f"MinHash steps {dt['seconds'] / ours['methods']['minhash']['seconds']:.2f}x"
    )
    print(f"removal sets equal: {same} ({len(ours['minhash_removed'])} removed)")
    print("\nper method, all methods on (semantic on a subset)")
    print(f"{'method':<12}{'seconds':>9}{'docs in':>9}{'docs/s':>9}{'MB/s':>7}")
    methods = dict(results["ours-all"]["methods"])
    methods["semantic"] = results["ours-semantic"]["methods"]["semantic"]
    for name, m in methods.items():
        print(
            f"{name:<12}{m['seconds']:>9.1f}{m['docs_in']:>9}{m['docs_per_s']:>9.0f}{m['mb_per_s']:>7.2f}"
        )
    print(
        f"peak RSS: all methods {results['ours-all']['peak_rss_mb']:.0f} MB, "
        f"with semantic {results['ours-semantic']['peak_rss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
