"""The token store inside a `tokens` artifact: token shards plus one document index per split.

Layout (format 2, docs/artifacts.md):

    tokens.json              format, domains, dtype, eos_id, vocab_size, per-split counts and
                             the split's shard files
    shards/*.bin             token ids of whole documents back to back, each ending in eos;
                             one shard per tokenize task
    {split}/docs.npy         int64 [n_docs, 4]: shard (into the split's shard list), start
                             offset, length (with eos), domain index. Rows are in the split's
                             shuffled order, so the order is the index and no token is copied

Both the shards and the index are memory-mapped, so opening a store reads only its header
files however large it is. Format 1 (one `{split}/tokens.bin` per split and a `[n_docs, 3]`
index of start, length, domain) still loads.

We use our own memmap format rather than datatrove's shards because the engine needs
random access per document (mixture sampling by domain, a shuffled order) and a document
index with domains.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llmforge.errors import BadInput

META = "tokens.json"
SHARDS = "shards"
FORMAT = 2


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


class ShardWriter:
    """Appends whole documents to one shard file; `close()` returns its local index."""

    def __init__(self, path: Path, dtype: np.dtype):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path, self.dtype = Path(path), np.dtype(dtype)
        self._fh = open(self.path, "wb")
        self._index: list[tuple[int, int, int]] = []
        self._offset = 0

    def add(self, ids: np.ndarray, domain: int) -> None:
        arr = np.asarray(ids, dtype=self.dtype)
        self._fh.write(arr.tobytes())
        self._index.append((self._offset, len(arr), domain))
        self._offset += len(arr)

    def add_many(self, flat: np.ndarray, lengths: list[int], domains: list[int]) -> None:
        """Append several documents stored back to back in `flat`."""
        self._fh.write(np.asarray(flat, dtype=self.dtype).tobytes())
        for length, domain in zip(lengths, domains):
            self._index.append((self._offset, length, domain))
            self._offset += length

    def close(self) -> np.ndarray:
        """int64 [n_docs, 3]: start, length, domain of each document, in writing order."""
        self._fh.close()
        return np.asarray(self._index, dtype=np.int64).reshape(-1, 3)


def write_index(root: Path, split: str, rows: np.ndarray) -> dict:
    """Write `{split}/docs.npy` (rows of shard, start, length, domain); returns the counts."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
    (Path(root) / split).mkdir(parents=True, exist_ok=True)
    np.save(Path(root) / split / "docs.npy", rows)
    return {"documents": len(rows), "tokens": int(rows[:, 2].sum())}


class TokenWriter:
    """One split written as a single shard in reading order (tests and small producers)."""

    def __init__(self, root: Path, split: str, dtype: np.dtype):
        self.root, self.split = Path(root), split
        self.shard = f"{SHARDS}/{split}.bin"
        self._writer = ShardWriter(self.root / self.shard, dtype)
        self.dtype = self._writer.dtype
        self.add, self.add_many = self._writer.add, self._writer.add_many

    def close(self) -> dict:
        local = self._writer.close()
        rows = np.concatenate([np.zeros((len(local), 1), dtype=np.int64), local], axis=1)
        return {**write_index(self.root, self.split, rows), "shards": [self.shard]}


class TokenStore:
    """Read-only view of one split across its shards; documents by index in shuffled order."""

    def __init__(self, root: str | Path, split: str = "train"):
        self.root = Path(root)
        meta_path = self.root / META
        if not meta_path.is_file():
            raise BadInput(f"not a tokens payload: no {META}", path=str(self.root))
        self.meta = json.loads(meta_path.read_text())
        self.split = split
        self.domains: list[str] = self.meta["domains"]
        self.eos_id: int = self.meta["eos_id"]
        self.vocab_size: int = self.meta["vocab_size"]
        self.dtype = np.dtype(self.meta["dtype"])
        index = self.root / split / "docs.npy"
        if not index.is_file():
            raise BadInput(f"tokens artifact has no '{split}' split", path=str(self.root))
        self.index = np.load(index, mmap_mode="r")
        if self.index.shape[1] == 3:  # format 1: {split}/tokens.bin, rows of start, length, domain
            self._shard_files = [self.root / split / "tokens.bin"]
            self._cols = (None, 0, 1, 2)
        else:
            shards = self.meta["splits"][split]["shards"]
            self._shard_files = [self.root / s for s in shards]
            self._cols = (0, 1, 2, 3)
        self._shards: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.index)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens (eos included) of every document, in index order."""
        return self.index[:, self._cols[2]]

    @property
    def domain_ids(self) -> np.ndarray:
        return self.index[:, self._cols[3]]

    def length(self, i: int) -> int:
        return int(self.index[i, self._cols[2]])

    def _shard(self, k: int) -> np.ndarray:
        if k not in self._shards:
            path = self._shard_files[k]
            size = path.stat().st_size if path.is_file() else 0
            self._shards[k] = (
                np.memmap(path, dtype=self.dtype, mode="r") if size else np.zeros(0, self.dtype)
            )
        return self._shards[k]

    def doc(self, i: int) -> np.ndarray:
        row = self.index[i]
        shard = 0 if self._cols[0] is None else int(row[0])
        start, length = int(row[self._cols[1]]), int(row[self._cols[2]])
        return self._shard(shard)[start : start + length]

    def domain_of(self, i: int) -> str:
        return self.domains[int(self.index[i, self._cols[3]])]

    def docs_in(self, domain: str) -> np.ndarray:
        """Indices of the documents of one domain."""
        if domain not in self.domains:
            raise BadInput(f"unknown domain '{domain}' (have {self.domains})", path=str(self.root))
        return np.flatnonzero(self.domain_ids == self.domains.index(domain))

    def domain_tokens(self) -> dict[str, int]:
        counts = np.bincount(self.domain_ids, weights=self.lengths, minlength=len(self.domains))
        return {d: int(c) for d, c in zip(self.domains, counts)}


def write_meta(
    root: Path, domains: list[str], dtype: np.dtype, eos_id: int, vocab_size: int, splits: dict
) -> None:
    """`splits[name]` holds the split's counts and its `shards` (paths relative to `root`)."""
    meta = {
        "format": FORMAT,
        "domains": domains,
        "dtype": np.dtype(dtype).name,
        "eos_id": eos_id,
        "vocab_size": vocab_size,
        "splits": splits,
    }
    (Path(root) / META).write_text(json.dumps(meta, indent=2))
