"""Semantic dedup: greedy keep-first within chunks, and the real MiniLM encoder on
paraphrases versus distinct topics."""

import numpy as np
import pytest

from llmforge.dedup import semantic
from tests.dedup.planted import topic_docs


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_duplicates_in_keeps_first_of_each_group():
    vecs = unit([[1, 0, 0], [0.99, 0.1, 0], [0, 1, 0], [0, 0.98, 0.2], [0, 0, 1]])
    drop, match = semantic.duplicates_in(vecs, 0.9)
    assert drop.tolist() == [1, 3] and match.tolist() == [0, 2]


def test_find_duplicates_over_several_clusters():
    rng = np.random.default_rng(0)
    centers = unit(rng.normal(size=(6, 16)))
    base = np.repeat(centers, 5, axis=0)  # 6 groups of 5 near-identical rows
    vecs = unit(base + rng.normal(scale=0.01, size=base.shape)).astype(np.float16)
    found = semantic.find_duplicates(vecs, 0.9, chunk_size=8)
    assert len(found) == 6 * 4
    assert all(dropped // 5 == kept // 5 for dropped, kept in found.items())


def test_embed_to_memmap_streams_batches(tmp_path):
    calls = []

    def fake(batch):
        calls.append(len(batch))
        return unit([[len(t), 1.0] for t in batch])

    out = semantic.embed_to_memmap(iter(["a", "bb", "ccc"]), 3, fake, tmp_path / "e.npy", 2)
    assert calls == [2, 1] and out.shape == (3, 2) and out.dtype == np.float16
    assert np.load(tmp_path / "e.npy").shape == (3, 2)


def test_encoder_dir_rejects_non_encoders(tmp_path):
    from llmforge.errors import BadInput

    with pytest.raises(BadInput, match="encoder"):
        semantic.encoder_dir(str(tmp_path))


def test_minilm_finds_paraphrases_not_topics():
    docs = topic_docs()
    encoder = semantic.Encoder(semantic.encoder_dir(None), max_tokens=128)
    found = semantic.find_duplicates(encoder([d["text"] for d in docs]), 0.7, 4096)
    pairs = {docs[d]["id"]: docs[k]["id"] for d, k in found.items()}
    assert pairs == {"para-bread": "topic-bread", "para-stars": "topic-stars"}
