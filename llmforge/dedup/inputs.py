"""Reading what dedup cleans: corpus artifacts, tokens artifacts (through their lineage),
raw jsonl files and eval task files, with a clear error for every bad line.

`ingest` validates every row once, streaming, and deals the documents into N shards so
datatrove's workers (one task per file) all get work. Nothing is held in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from llmforge import textfiles
from llmforge.errors import BadInput

MANIFEST = "manifest.json"


@dataclass
class IngestStats:
    """What went in: documents and bytes, overall and per domain."""

    docs: int = 0
    bytes: int = 0
    domains: dict[str, list[int]] = field(default_factory=dict)  # domain -> [docs, bytes]

    def add(self, domain: str, size: int) -> None:
        self.docs += 1
        self.bytes += size
        entry = self.domains.setdefault(domain, [0, 0])
        entry[0] += 1
        entry[1] += size


def _manifest(path: Path) -> dict | None:
    mf = path / MANIFEST
    if not mf.is_file():
        return None
    try:
        return json.loads(mf.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"corrupt manifest: {e}", path=str(mf)) from None


def _jsonl_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.jsonl") if "_work" not in p.parts)


def corpus_files(
    path: str | Path, domain: str | None = None, _seen: frozenset = frozenset()
) -> list[tuple[Path, str | None]]:
    """The jsonl document files behind `path`, each with the domain its rows default to.

    A corpus artifact gives its `documents/`; a tokens artifact is followed back through
    its manifest `inputs` (a raw input's role names its domain, as in tokenize); a jsonl
    file or a directory of them is read as it is.
    """
    path = Path(path).resolve()
    if path in _seen:
        raise BadInput("artifact lineage loops back on itself", path=str(path))
    manifest = _manifest(path) if path.is_dir() else None
    if manifest is None:
        if path.is_file():
            return [(path, domain)]
        if path.is_dir() and (files := _jsonl_in(path)):
            return [(f, domain) for f in files]
        raise BadInput("no jsonl documents found", path=str(path))
    kind = manifest.get("kind")
    if kind == "corpus":
        files = _jsonl_in(path / "documents")
        if not files:
            raise BadInput("corpus artifact has no documents/*.jsonl", path=str(path))
        return [(f, domain) for f in files]
    if kind == "tokens":
        found = [f for inp in _manifest_inputs(manifest) for f in _follow(inp, path, _seen)]
        if not found:
            raise BadInput("tokens artifact names no corpus or jsonl input", path=str(path))
        return found
    raise BadInput(f"is a '{kind}' artifact; dedup reads corpus, tokens or jsonl", path=str(path))


def _manifest_inputs(manifest: dict) -> list[dict]:
    inputs = manifest.get("inputs") or []
    if isinstance(inputs, dict):  # tolerate {role: {...}} as well as a list
        inputs = [dict(v, role=k) for k, v in inputs.items()]
    return [i for i in inputs if isinstance(i, dict) and i.get("path")]


def _follow(inp: dict, parent: Path, seen: frozenset) -> list[tuple[Path, str | None]]:
    target = Path(inp["path"])
    if not target.is_absolute():
        target = parent / target
    if inp.get("kind") == "tokenizer" or _kind_of(target) == "tokenizer":
        return []
    if not target.exists():
        raise BadInput(f"input '{inp['path']}' of this artifact no longer exists", path=str(parent))
    role = inp.get("role") or None
    domain = role if role not in (None, "corpus", "input", "documents") else None
    return corpus_files(target, domain, seen | {parent})


def _kind_of(path: Path) -> str | None:
    manifest = _manifest(path) if path.is_dir() else None
    return manifest.get("kind") if manifest else None


def iter_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-blank line; BadInput on a truncated file, non-UTF-8 or
    malformed JSON (`llmforge.textfiles`)."""
    yield from textfiles.json_lines(path)


def check_document(row: dict, path: Path, line: int, default_domain: str) -> dict:
    """A clean `{"id", "text", "domain"}` row, or BadInput naming the field."""
    text = row.get("text")
    if text is None:
        raise BadInput("missing 'text'", path=str(path), line=line)
    if not isinstance(text, str):
        raise BadInput(
            f"'text' must be a string, got {type(text).__name__}", path=str(path), line=line
        )
    if not text.strip():
        raise BadInput("'text' is empty", path=str(path), line=line)
    domain = row.get("domain", default_domain)
    if not isinstance(domain, str) or not domain:
        raise BadInput("'domain' must be a non-empty string", path=str(path), line=line)
    doc_id = row.get("id", f"{path.stem}:{line}")
    return {"id": str(doc_id), "text": text, "domain": domain}


def ingest(
    files: list[tuple[Path, str | None]], dest: Path, shards: int, default_domain: str
) -> IngestStats:
    """Validate every row of `files` (path, domain for rows without one) and deal them
    round-robin into `dest/NNNNN.jsonl`."""
    dest.mkdir(parents=True, exist_ok=True)
    stats = IngestStats()
    outs = [open(dest / f"{i:05d}.jsonl", "wb") for i in range(shards)]
    try:
        for path, domain in files:
            for line, row in iter_rows(path):
                doc = check_document(row, path, line, domain or default_domain)
                outs[stats.docs % shards].write(orjson.dumps(doc) + b"\n")
                stats.add(doc["domain"], len(doc["text"].encode("utf-8")))
    finally:
        for f in outs:
            f.close()
    if stats.docs == 0:
        raise BadInput("no documents in the input", path=str(files[0][0]) if files else None)
    return stats


@dataclass(frozen=True)
class EvalItem:
    """One eval item to decontaminate against: its source and the text to match."""

    source: str
    id: str
    text: str


def load_eval_items(path: str | Path) -> list[EvalItem]:
    """Eval task rows (`prompt` + `reference`) from a jsonl file or a directory of them."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("*.jsonl"))
    if not files:
        raise BadInput("no eval jsonl files found", path=str(path))
    items = []
    for f in files:
        for line, row in iter_rows(f):
            prompt = row.get("prompt")
            if isinstance(prompt, list):  # chat messages
                prompt = "\n".join(str(m.get("content", "")) for m in prompt if isinstance(m, dict))
            if not isinstance(prompt, str):
                raise BadInput("eval row needs a string 'prompt'", path=str(f), line=line)
            reference = row.get("reference") or ""
            if not isinstance(reference, str):
                raise BadInput("'reference' must be a string or null", path=str(f), line=line)
            item_id = str(row.get("id", f"{f.stem}:{line}"))
            items.append(EvalItem(source=f.stem, id=item_id, text=f"{prompt}\n{reference}"))
    return items


def write_eval_index_source(items: list[EvalItem], path: Path) -> None:
    """Write eval items as the jsonl the DecontaminationFilter loads."""
    with open(path, "wb") as f:
        for item in items:
            f.write(orjson.dumps({"source": item.source, "id": item.id, "text": item.text}) + b"\n")
