"""A synthetic tokens payload, the stand-in data of engine tests and benchmarks (which
cannot download any): documents whose tokens encode their origin.

Document j of domain d holds tokens `[d*100 + (j % 90) + 1] * (length - 1) + [eos]`, so a
test can tell from any token which domain (and roughly which document) it came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmforge.data.tokens import TokenWriter, dtype_for, write_meta

EOS = 0
VOCAB = 512


def make_tokens(root: Path, docs: dict[str, int], length=(5, 30), seed: int = 0,
                val_docs: int = 3) -> Path:  # fmt: skip
    """A tokens payload with `docs[domain]` train documents per domain (and a val split)."""
    rng = np.random.default_rng(seed)
    domains = list(docs)
    splits = {}
    for split, counts in (("train", docs), ("val", dict.fromkeys(docs, val_docs))):
        writer = TokenWriter(root, split, dtype_for(VOCAB))
        for d, name in enumerate(domains):
            for j in range(counts[name]):
                n = int(rng.integers(*length))
                writer.add(np.array([d * 100 + (j % 90) + 1] * (n - 1) + [EOS]), d)
        splits[split] = writer.close()
    write_meta(root, domains, dtype_for(VOCAB), EOS, VOCAB, splits)
    return root


def domain_of_token(token: int) -> int:
    """The domain index a token of `make_tokens` was written for."""
    return (token - 1) // 100
