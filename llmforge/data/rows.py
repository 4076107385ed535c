"""Rows of structured data files: jsonl (plain or compressed), parquet, and `datasets`
save_to_disk folders.

Chat, preference and prompt data arrive in the forms users keep them: a jsonl file, a
folder of parquet shards, or a folder written by `Dataset.save_to_disk` (read back with
`datasets.load_from_disk`, which memory-maps its Arrow files). `read_rows` yields
`(row, line)` so every error can name the file and line; for parquet and datasets the
"line" is the row number, counted from 1. Text follows `llmforge.textfiles` (UTF-8, a
byte-order mark dropped, a truncated or corrupt file is BadInput).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from llmforge import textfiles
from llmforge.errors import BadInput

JSONL_SUFFIXES = tuple(
    base + c for base in (".jsonl", ".json", ".ndjson") for c in textfiles.COMPRESSIONS
) + (".jsonl", ".ndjson")
ROW_SUFFIXES = (*JSONL_SUFFIXES, ".json", ".parquet")


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
        i = 0
        for cols in parquet_batches(path):
            for values in zip(*cols.values(), strict=True):
                i += 1
                yield dict(zip(cols, values, strict=True)), i
    else:
        for i, row in textfiles.json_lines(path):
            yield row, i


def parquet_batches(f: Path, need: str | None = None) -> Iterator[dict[str, list]]:
    """The columns of a parquet file, batch by batch; BadInput if the file does not decode
    (truncated, corrupt, not parquet) or lacks the column `need`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(f)
        if need is not None and need not in table.schema_arrow.names:
            raise BadInput(f"parquet has no column '{need}'", path=str(f))
        for batch in table.iter_batches(batch_size=4096):
            yield batch.to_pydict()
    except (pa.ArrowException, OSError) as e:
        raise BadInput(f"corrupt or truncated parquet: {e}", path=str(f)) from None


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
