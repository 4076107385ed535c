"""Reading the text files users give us: jsonl (plain or compressed), JSON, YAML, plain text.

One place decides what a readable text file is, so every reader (documents, chat and
preference data, RL prompts, eval tasks, configs, mixtures) agrees:

- UTF-8, with or without a byte-order mark (editors on Windows write one; Python's
  `utf-8-sig`, pandas and datasets accept it): the mark is dropped.
- `.gz`, `.bz2` and `.xz` are decompressed with the standard library, `.zst` with pyarrow's
  zstd codec (pyarrow is a dependency already; no extra package).
- A file that cannot be opened, a truncated or corrupt compressed stream, a line that is not
  UTF-8 or not JSON: `BadInput` naming the file and the line, so the stage exits 2 and
  publishes nothing.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from llmforge.errors import BadInput

BOM = b"\xef\xbb\xbf"
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
# What a broken compressed stream raises: gzip/bz2/lzma/pyarrow (OSError), a cut-off
# stream (EOFError), a bad deflate block (zlib.error), a bad xz block (LZMAError).
STREAM_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)


def compression(path: str | Path) -> str | None:
    """The compression suffix of `path` ('.gz', ...), or None for a plain file."""
    name = str(path).lower()
    return next((c for c in COMPRESSIONS if name.endswith(c)), None)


def open_binary(path: str | Path) -> IO[bytes]:
    """`path` opened for reading, decompressed according to its suffix."""
    path = Path(path)
    kind = compression(path)
    try:
        if kind == ".gz":
            return gzip.open(path, "rb")
        if kind == ".bz2":
            return bz2.open(path, "rb")
        if kind == ".xz":
            return lzma.open(path, "rb")
        if kind == ".zst":
            import pyarrow as pa

            return io.BufferedReader(pa.input_stream(str(path), compression="zstd"))
        return open(path, "rb")
    except OSError as e:
        raise BadInput(f"cannot read: {e.strerror or e}", path=str(path)) from None


def lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of every line, the first without its byte-order mark."""
    lineno = 0
    with open_binary(path) as f:
        try:
            for lineno, raw in enumerate(f, 1):
                yield lineno, raw[3:] if lineno == 1 and raw.startswith(BOM) else raw
        except STREAM_ERRORS as e:
            what = f"the {compression(path)} stream" if compression(path) else "the file"
            raise BadInput(
                f"corrupt or truncated: {what} breaks off after line {lineno} ({e})",
                path=str(path),
                line=lineno + 1,
            ) from None


def utf8(raw: bytes, path: str | Path, line: int | None = None) -> str:
    """`raw` decoded as UTF-8; BadInput naming the file, the line and the byte otherwise."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if line is None:  # a whole file: find the line of the bad byte
            line = raw[: e.start].count(b"\n") + 1
        raise BadInput(f"not UTF-8 (byte {e.start})", path=str(path), line=line) from None


def json_lines(path: str | Path, objects: bool = True) -> Iterator[tuple[int, Any]]:
    """(line number, value) of every non-blank line of a jsonl file; with `objects`, each
    value must be a JSON object."""
    for lineno, raw in lines(path):
        if not raw.strip():
            continue
        text = utf8(raw, path, lineno)
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            raise BadInput(f"malformed JSON ({e})", path=str(path), line=lineno) from None
        if objects and not isinstance(value, dict):
            raise BadInput("expected a JSON object per line", path=str(path), line=lineno)
        yield lineno, value


def read_text(path: str | Path) -> str:
    """A whole text file (decompressed by suffix), without a byte-order mark."""
    with open_binary(path) as f:
        try:
            data = f.read()
        except STREAM_ERRORS as e:
            raise BadInput(f"corrupt or truncated file ({e})", path=str(path)) from None
    return utf8(data[3:] if data.startswith(BOM) else data, path)
