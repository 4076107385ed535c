"""The token store inside a `tokens` artifact: flat token files plus a document index.

Layout (docs/artifacts.md):

    tokens.json              domains, dtype, eos_id, vocab_size, per-split counts
    {split}/tokens.bin       token ids of all documents of the split, each ending in eos
    {split}/docs.npy         int64 [n_docs, 3]: start offset, length (with eos), domain index

We use our own memmap format rather than datatrove's shards because the engine needs
random access per document (offline shuffle, mixture sampling by domain) and a document
index it can read in one `np.load`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llmforge.errors import BadInput

META = "tokens.json"


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


class TokenWriter:
    """Appends documents of one split to `{split}/tokens.bin` and its index."""

    def __init__(self, root: Path, split: str, dtype: np.dtype):
        self.dir = Path(root) / split
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self._fh = open(self.dir / "tokens.bin", "wb")
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

    def close(self) -> dict:
        self._fh.close()
        index = np.asarray(self._index, dtype=np.int64).reshape(-1, 3)
        np.save(self.dir / "docs.npy", index)
        return {"documents": len(index), "tokens": int(self._offset)}


class TokenStore:
    """Read-only view of one split: `tokens` (memmap), `docs` index, `domains`."""

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
        d = self.root / split
        if not (d / "docs.npy").is_file():
            raise BadInput(f"tokens artifact has no '{split}' split", path=str(self.root))
        self.docs = np.load(d / "docs.npy")
        n = int(self.docs[:, 1].sum()) if len(self.docs) else 0
        self.tokens = (
            np.memmap(d / "tokens.bin", dtype=np.dtype(self.meta["dtype"]), mode="r", shape=(n,))
            if n
            else np.zeros(0, dtype=self.meta["dtype"])
        )

    def __len__(self) -> int:
        return len(self.docs)

    def doc(self, i: int) -> np.ndarray:
        start, length, _ = self.docs[i]
        return self.tokens[start : start + length]

    def domain_of(self, i: int) -> str:
        return self.domains[int(self.docs[i, 2])]

    def docs_in(self, domain: str) -> np.ndarray:
        """Indices of the documents of one domain."""
        if domain not in self.domains:
            raise BadInput(f"unknown domain '{domain}' (have {self.domains})", path=str(self.root))
        return np.flatnonzero(self.docs[:, 2] == self.domains.index(domain))

    def domain_tokens(self) -> dict[str, int]:
        counts = np.bincount(self.docs[:, 2], weights=self.docs[:, 1], minlength=len(self.domains))
        return {d: int(c) for d, c in zip(self.domains, counts)}


def write_meta(
    root: Path, domains: list[str], dtype: np.dtype, eos_id: int, vocab_size: int, splits: dict
) -> None:
    meta = {
        "domains": domains,
        "dtype": np.dtype(dtype).name,
        "eos_id": eos_id,
        "vocab_size": vocab_size,
        "splits": splits,
    }
    (Path(root) / META).write_text(json.dumps(meta, indent=2))
