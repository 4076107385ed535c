"""Decontamination check: n-gram overlap between eval items and a model's training data.

The training data is found through lineage (`llmforge.artifact.lineage`): from the model
back through every stage to `corpus` artifacts (their `documents/`) and raw inputs
(jsonl, jsonl.gz, parquet or text folders). Below a corpus we stop: its documents are what
was trained on, not what an earlier filter removed. Tokenizer inputs are skipped: the text a
tokenizer was trained on never trained the model.

Text is normalised the way GPT-3's decontamination did (lowercase, words of letters and
digits only) and cut into word n-grams (13 by default). An eval item is contaminated when
at least `min_overlap` of its n-grams occur in some training document (any one, by
default). Items shorter than n words cannot be checked and are reported as such.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llmforge import log, textfiles
from llmforge.artifact import lineage
from llmforge.data import rows as row_files
from llmforge.data import sources

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Source:
    """One place training text lives: a corpus artifact's documents or a raw input."""

    path: Path
    kind: str  # "corpus" or "raw"
    via: str  # the artifact whose lineage led here


@dataclass
class Report:
    """What the check found, per task: flagged item ids and where they matched."""

    ngram: int
    sources: list[Source]
    documents: int = 0
    contaminated: dict[str, dict[str, dict]] = field(default_factory=dict)
    unchecked: dict[str, list[str]] = field(default_factory=dict)

    def ids(self, task: str) -> set[str]:
        return set(self.contaminated.get(task, {}))

    def to_json(self) -> dict:
        return {
            "ngram": self.ngram,
            "documents_scanned": self.documents,
            "sources": [{"path": str(s.path), "kind": s.kind, "via": s.via} for s in self.sources],
            "contaminated": self.contaminated,
            "unchecked": {t: len(v) for t, v in self.unchecked.items()},
        }


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def training_sources(model_path: str | Path) -> list[Source]:
    """Corpus artifacts and raw inputs in a model's lineage, each listed once."""
    found: dict[str, Source] = {}

    def walk(node: dict, via: str) -> None:
        kind = node.get("kind")
        if kind == "tokenizer" or node.get("role") == "tokenizer":
            return  # a tokenizer's training text never trained the model's weights
        if kind in ("corpus", "raw"):
            path = Path(node["path"])
            path = path / "documents" if kind == "corpus" else path
            found.setdefault(str(path), Source(path, kind, via))
            if kind == "corpus":
                return
        for child in node.get("inputs", []):
            walk(child, node.get("path", via))

    walk(lineage(model_path), str(model_path))
    missing = [s for s in found.values() if not s.path.exists()]
    for s in missing:
        log.warn(f"decontamination: training input {s.path} is gone; it is not checked")
    return [s for s in found.values() if s.path.exists()]


def iter_texts(path: Path) -> Iterator[tuple[str, str]]:
    """(doc id, text) of every row in a source, whatever its schema (chat, prefs, tasks)."""
    if row_files.is_saved_dataset(path):
        yield from _row_texts(row_files.read_rows(path), path.name)
        return
    for f in sources.source_files(path):
        name = f.name.lower()
        if name.endswith(sources.JSONL_SUFFIXES):
            yield from _jsonl_texts(f)
        elif name.endswith(".parquet"):  # any columns: chat, preference or task rows
            yield from _row_texts(row_files.read_rows(f), f.name)
        else:
            for doc in sources.iter_documents(f, "x"):
                yield doc.id, doc.text


def _jsonl_texts(f: Path) -> Iterator[tuple[str, str]]:
    for lineno, raw in textfiles.lines(f):  # a truncated file is still BadInput
        try:
            row = json.loads(raw.decode("utf-8", errors="replace"))
        except json.JSONDecodeError:
            continue  # the training stage already decided about bad lines
        if isinstance(row, dict):
            yield from _row_texts([(row, lineno)], f.name)
        else:
            yield "", "\n".join(_strings(row))


def _row_texts(pairs, name: str) -> Iterator[tuple[str, str]]:
    """A row's `text`, else every string in it (messages, prompt, chosen, ...)."""
    for row, line in pairs:
        text = row.get("text")
        yield (
            str(row.get("id", f"{name}:{line}")),
            (text if isinstance(text, str) else "\n".join(_strings(row))),
        )


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def check(
    items: dict[str, dict[str, str]], srcs: list[Source], n: int = 13, min_overlap: float = 0.0
) -> Report:
    """Flag eval items ({task: {id: text}}) whose n-grams occur in the training sources."""
    report = Report(n, srcs)
    wanted: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    sizes: dict[tuple[str, str], int] = {}
    for task, rows in items.items():
        for item_id, text in rows.items():
            grams = ngrams(text, n)
            if not grams:
                report.unchecked.setdefault(task, []).append(item_id)
            sizes[(task, item_id)] = len(grams)
            for g in grams:
                wanted.setdefault(g, []).append((task, item_id))
    hits: dict[tuple[str, str], set] = {}
    where: dict[tuple[str, str], dict] = {}
    for src in srcs:
        for doc_id, text in iter_texts(src.path):
            report.documents += 1
            for g in ngrams(text, n) & wanted.keys():
                for key in wanted[g]:
                    hits.setdefault(key, set()).add(g)
                    where.setdefault(key, {"source": str(src.path), "doc": doc_id})
    for key, grams in hits.items():
        share = len(grams) / sizes[key]
        if share >= min_overlap:
            report.contaminated.setdefault(key[0], {})[key[1]] = {
                **where[key],
                "overlap": round(share, 4),
            }
    return report
