"""Reading raw documents: jsonl (plain, .gz, .bz2, .xz, .zst), parquet, a `datasets`
save_to_disk folder, or a folder of text files.

Every document comes out as a `Doc(id, text, domain)`. Bad input raises `BadInput` naming
the file and line, unless `skip_bad_lines` is on: then the bad line is counted and written
to a rejects file, and reading goes on. A truncated or corrupt file (a compressed stream
that breaks off, a parquet file that does not decode) is always `BadInput`: there is no
line to skip past. Text follows `llmforge.textfiles` (UTF-8, a byte-order mark dropped).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from llmforge import textfiles
from llmforge.data import rows
from llmforge.errors import BadInput

JSONL_SUFFIXES = rows.JSONL_SUFFIXES
TEXT_SUFFIXES = (".txt", ".md", ".py", ".rst", ".text")


@dataclass(frozen=True)
class Doc:
    id: str
    text: str
    domain: str


@dataclass
class Rejects:
    """Collects lines skipped under `skip_bad_lines`, written as jsonl."""

    path: Path | None = None
    count: int = 0
    _fh: IO | None = None

    def add(self, file: Path, line: int, reason: str, raw: bytes) -> None:
        self.count += 1
        if self.path is None:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        record = {
            "file": str(file),
            "line": line,
            "reason": reason,
            "raw": raw[:2000].decode("utf-8", "replace"),
        }
        self._fh.write(json.dumps(record) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def source_files(path: Path) -> list[Path]:
    """The readable files behind an input path, in a deterministic order (for a `datasets`
    save_to_disk folder, its Arrow files)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BadInput("no such file or directory", path=str(path))
    if rows.is_saved_dataset(path):
        return sorted(path.rglob("*.arrow"))
    files = sorted(
        f for f in path.rglob("*") if f.is_file() and not f.name.startswith(".") and _readable(f)
    )
    if not files:
        raise BadInput("folder holds no jsonl, parquet or text files", path=str(path))
    return files


def _readable(f: Path) -> bool:
    name = f.name.lower()
    return name.endswith(JSONL_SUFFIXES + TEXT_SUFFIXES + (".parquet",))


def iter_documents(
    path: Path,
    domain: str,
    text_field: str = "text",
    skip_bad_lines: bool = False,
    rejects: Rejects | None = None,
) -> Iterator[Doc]:
    """Stream documents from one input path; `domain` labels them unless rows carry one."""
    rejects = rejects or Rejects()
    if rows.is_saved_dataset(Path(path)):
        yield from _read_dataset(Path(path), domain, text_field)
        return
    for f in source_files(Path(path)):
        name = f.name.lower()
        if name.endswith(JSONL_SUFFIXES):
            yield from _read_jsonl(f, domain, text_field, skip_bad_lines, rejects)
        elif name.endswith(".parquet"):
            yield from _read_parquet(f, domain, text_field)
        else:
            yield _read_text(f, domain, Path(path))


def _read_jsonl(
    f: Path, domain: str, text_field: str, skip: bool, rejects: Rejects
) -> Iterator[Doc]:
    for lineno, raw in textfiles.lines(f):
        if not raw.strip():
            continue
        try:
            doc = _parse_line(raw, f, lineno, domain, text_field)
        except BadInput as e:
            if not skip:
                raise
            rejects.add(f, lineno, str(e).split(": ", 1)[-1], raw)
            continue
        yield doc


def _parse_line(raw: bytes, f: Path, lineno: int, domain: str, text_field: str) -> Doc:
    textfiles.utf8(raw, f, lineno)
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadInput(f"malformed JSON: {e}", path=str(f), line=lineno) from None
    if not isinstance(row, dict):
        raise BadInput("expected a JSON object per line", path=str(f), line=lineno)
    text = row.get(text_field)
    if not isinstance(text, str):
        what = "missing" if text is None else f"not a string ({type(text).__name__})"
        raise BadInput(f"field '{text_field}' is {what}", path=str(f), line=lineno)
    doc_id = str(row.get("id", f"{f.stem}:{lineno}"))
    return Doc(doc_id, text, str(row.get("domain") or domain))


def _read_parquet(f: Path, domain: str, text_field: str) -> Iterator[Doc]:
    row = 0
    for cols in rows.parquet_batches(f, text_field):
        for i, text in enumerate(cols[text_field]):
            row += 1
            if not isinstance(text, str):
                raise BadInput(f"column '{text_field}' is not a string", path=str(f), line=row)
            doc_id = str(cols["id"][i]) if "id" in cols else f"{f.stem}:{row}"
            dom = cols["domain"][i] if "domain" in cols and cols["domain"][i] else domain
            yield Doc(doc_id, text, str(dom))


def _read_dataset(path: Path, domain: str, text_field: str) -> Iterator[Doc]:
    for row, i in rows.read_rows(path):
        text = row.get(text_field)
        if not isinstance(text, str):
            raise BadInput(f"field '{text_field}' is not a string", path=str(path), line=i)
        yield Doc(str(row.get("id", f"{path.name}:{i}")), text, str(row.get("domain") or domain))


def _read_text(f: Path, domain: str, root: Path) -> Doc:
    text = textfiles.read_text(f)
    rel = f.relative_to(root) if root.is_dir() else f.name
    return Doc(str(rel), text, domain)
