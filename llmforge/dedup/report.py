"""Assemble the published corpus from the work folders, and the report of what was
removed and why: documents and bytes in, kept and removed per reason and per domain,
samples of removed documents, eval items hit, and time and throughput per method.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import orjson
from rich.table import Table

from llmforge.dedup.layout import Layout

SHARD_DOCS = 100_000
SAMPLE_CHARS = 300


def _rows(folder: Path):
    """(file, line index, raw line) over the jsonl shards of a folder, in sorted order."""
    for f in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        with open(f, "rb") as fh:
            for i, raw in enumerate(fh):
                yield f, i, raw


def folder_size(folder: Path) -> tuple[int, int]:
    """(rows, bytes) of a folder's jsonl shards."""
    rows = size = 0
    for f in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        size += f.stat().st_size
        with open(f, "rb") as fh:
            rows += sum(1 for _ in fh)
    return rows, size


class ShardWriter:
    """Writes jsonl rows into `NNNNN.jsonl` shards of at most SHARD_DOCS rows."""

    def __init__(self, folder: Path, prefix: str = ""):
        self.folder, self.prefix = folder, prefix
        self.count, self._f = 0, None

    def write(self, raw: bytes) -> None:
        if self.count % SHARD_DOCS == 0:
            self.close()
            self.folder.mkdir(parents=True, exist_ok=True)
            self._f = open(self.folder / f"{self.prefix}{self.count // SHARD_DOCS:05d}.jsonl", "wb")
        self._f.write(raw if raw.endswith(b"\n") else raw + b"\n")
        self.count += 1

    def close(self) -> None:
        if self._f:
            self._f.close()
            self._f = None


class Tally:
    """Documents and bytes per domain for one outcome (kept, or one removal reason)."""

    def __init__(self):
        self.docs: Counter = Counter()
        self.bytes: Counter = Counter()

    def add(self, row: dict) -> None:
        self.docs[row["domain"]] += 1
        self.bytes[row["domain"]] += len(row["text"].encode("utf-8"))

    def summary(self) -> dict:
        return {
            "docs": sum(self.docs.values()),
            "bytes": sum(self.bytes.values()),
            "per_domain": {
                d: {"docs": self.docs[d], "bytes": self.bytes[d]} for d in sorted(self.docs)
            },
        }


def write_kept(
    layout: Layout, out_dir: Path, semantic_drops: dict[tuple[str, int], str]
) -> tuple[Tally, Tally]:
    """Copy surviving rows into `documents/`; semantic duplicates go to `removed/semantic.jsonl`."""
    kept, sem = Tally(), Tally()
    docs = ShardWriter(out_dir / "documents")
    with open(out_dir / "removed" / "semantic.jsonl", "wb") as removed:
        for folder in layout.kept_folders():
            for f, i, raw in _rows(folder):
                row = orjson.loads(raw)
                match = semantic_drops.get((str(f.relative_to(layout.work)), i))
                if match is None:
                    docs.write(raw)
                    kept.add(row)
                    continue
                row.update(reason="semantic", detail=f"cosine >= threshold with {match}")
                removed.write(orjson.dumps(row) + b"\n")
                sem.add(row)
    docs.close()
    return kept, sem


def collect_removed(layout: Layout, out_dir: Path, samples: int) -> tuple[dict, dict, Counter]:
    """Merge `work/removed/<reason>/` into `removed/<reason>.jsonl`; tally and sample."""
    tallies: dict[str, Tally] = defaultdict(Tally)
    sampled: dict[str, list] = defaultdict(list)
    hits: Counter = Counter()
    folders = (
        sorted(p for p in layout.removed.iterdir() if p.is_dir()) if layout.removed.is_dir() else []
    )
    for folder in folders:
        with open(out_dir / "removed" / f"{folder.name}.jsonl", "wb") as out:
            for _, _, raw in _rows(folder):
                out.write(raw if raw.endswith(b"\n") else raw + b"\n")
                row = orjson.loads(raw)
                tallies[folder.name].add(row)
                hits.update(row.get("eval_hits", ()))
                if len(sampled[folder.name]) < samples:
                    sampled[folder.name].append(sample_of(row))
    return tallies, sampled, hits


def sample_of(row: dict) -> dict:
    text = row["text"]
    short = text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + "..."
    return {"id": row["id"], "domain": row["domain"], "detail": row.get("detail"), "text": short}


def build_report(
    ingest: dict, kept: Tally, removed: dict[str, Tally], samples, hits, methods, seconds
) -> dict:
    """The report dict: also the stage's manifest metrics."""
    removed_docs = sum(t.summary()["docs"] for t in removed.values())
    return {
        "docs_in": ingest["docs"],
        "bytes_in": ingest["bytes"],
        "docs_kept": sum(kept.docs.values()),
        "bytes_kept": sum(kept.bytes.values()),
        "docs_removed": removed_docs,
        "removed_fraction": round(removed_docs / max(ingest["docs"], 1), 6),
        "in_per_domain": {
            d: {"docs": v[0], "bytes": v[1]} for d, v in sorted(ingest["domains"].items())
        },
        "kept": kept.summary(),
        "removed": {reason: t.summary() for reason, t in sorted(removed.items()) if t.docs},
        "eval_items_hit": dict(sorted(hits.items())),
        "samples": {k: v for k, v in sorted(samples.items()) if v},
        "methods": methods,
        "seconds": round(seconds, 3),
        "docs_per_s": round(ingest["docs"] / max(seconds, 1e-9), 1),
        "mb_per_s": round(ingest["bytes"] / 1e6 / max(seconds, 1e-9), 3),
    }


def render(report: dict) -> list[Table]:
    """Rich tables for stderr: the outcome per reason and domain, then the samples."""
    domains = sorted(report["in_per_domain"])
    table = Table(title="dedup: documents by outcome and domain", title_justify="left")
    for col in ("outcome", "docs", "MB", *domains):
        table.add_column(col, justify="left" if col == "outcome" else "right")
    mb = lambda b: f"{b / 1e6:.2f}"  # noqa: E731
    ins = report["in_per_domain"]
    table.add_row(
        "in",
        str(report["docs_in"]),
        mb(report["bytes_in"]),
        *(str(ins[d]["docs"]) for d in domains),
    )
    rows = [("kept", report["kept"])] + [(f"- {r}", s) for r, s in report["removed"].items()]
    for name, s in rows:
        per = [str(s["per_domain"].get(d, {}).get("docs", 0)) for d in domains]
        table.add_row(name, str(s["docs"]), mb(s["bytes"]), *per)
    tables = [table]
    if report["samples"]:
        samples = Table(title="sample of removed documents", title_justify="left")
        for col in ("reason", "id", "detail", "text"):
            samples.add_column(col, overflow="fold")
        for reason, items in report["samples"].items():
            for item in items:
                samples.add_row(
                    reason,
                    item["id"],
                    str(item["detail"])[:80],
                    item["text"][:80].replace("\n", " "),
                )
        tables.append(samples)
    timing = Table(
        title=f"time {report['seconds']:.1f}s, {report['docs_per_s']:.0f} docs/s",
        title_justify="left",
    )
    for col in ("method", "seconds", "docs in", "docs/s", "MB/s"):
        timing.add_column(col, justify="right")
    for name, m in report["methods"].items():
        timing.add_row(
            name,
            f"{m['seconds']:.2f}",
            str(m["docs_in"]),
            f"{m['docs_per_s']:.0f}",
            f"{m['mb_per_s']:.2f}",
        )
    tables.append(timing)
    return tables
