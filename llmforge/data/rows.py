"""Rows of structured data files: jsonl(.gz), parquet, and `datasets` save_to_disk folders.

Chat, preference and prompt data arrive in the forms users keep them: a jsonl file, a
folder of parquet shards, or a folder written by `Dataset.save_to_disk` (read back with
`datasets.load_from_disk`, which memory-maps its Arrow files). `read_rows` yields
`(row, line)` so every error can name the file and line; for parquet and datasets the
"line" is the row number, counted from 1.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from llmforge.errors import BadInput

ROW_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".parquet")


def is_saved_dataset(path: Path) -> bool:
    """A folder written by `datasets` `save_to_disk` (a Dataset or a DatasetDict)."""
    path = Path(path)
    single = (path / "dataset_info.json").is_file() and (path / "state.json").is_file()
    return path.is_dir() and (single or (path / "dataset_dict.json").is_file())


def data_files(path: Path) -> list[Path]:
    """The row sources of an input: a file, a saved dataset, or the files in a folder."""
    path = Path(path)
    if path.is_file() or is_saved_dataset(path):
        return [path]
    if (path / "documents").is_dir():  # a corpus-like artifact keeps its rows there
        path = path / "documents"
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(ROW_SUFFIXES))
    if not files:
        raise BadInput(
            "no .jsonl or .parquet files and not a datasets save_to_disk folder", path=str(path)
        )
    return files


def read_rows(path: Path, split: str = "train") -> Iterator[tuple[dict, int]]:
    """(row, line) pairs of one source from `data_files`."""
    path = Path(path)
    if path.is_dir():
        yield from _dataset_rows(path, split)
    elif path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist(), 1):
            yield row, i
    else:
        yield from _jsonl_rows(path)


def _jsonl_rows(path: Path) -> Iterator[tuple[dict, int]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise BadInput(f"invalid JSON: {e.msg}", path=str(path), line=i) from None
            if not isinstance(row, dict):
                raise BadInput("each line must be a JSON object", path=str(path), line=i)
            yield row, i


def _dataset_rows(path: Path, split: str) -> Iterator[tuple[dict, int]]:
    from datasets import DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except (OSError, ValueError) as e:
        raise BadInput(f"cannot load the saved dataset: {e}", path=str(path)) from None
    if isinstance(data, DatasetDict):
        if split not in data:
            raise BadInput(f"the DatasetDict has no '{split}' split (splits: {list(data)})",
                           path=str(path))  # fmt: skip
        data = data[split]
    for i, row in enumerate(data, 1):
        yield row, i
