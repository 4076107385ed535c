"""The pretraining data loader: mixture sampling, random-sequential buffers and packing.

Every training row is built the same way:

1. pick a domain with the current stage's mixture weights;
2. take a document from that domain's *random-sequential buffer* (Trinity style): documents
   are read in storage order (the tokenize stage already shuffled them offline) into a
   buffer of `buffer_docs`, and each draw takes a random slot and refills it with the next
   document, so reads stay sequential while the order is mixed;
3. pack documents end to end into `seq_len + 1` tokens; a document that does not fit
   continues at the start of the next row. `doc_ids` number the documents of a row so the
   model masks attention across them, and targets that would cross a document boundary
   are ignored (-100).

Each data-parallel rank reads its own shard of every domain and its own random stream, so
ranks see different data. The whole position (random state, buffers, cursors, the document
cut across rows) is a small JSON-able `state_dict()`, which checkpoints carry so a resumed
run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from llmforge.config import check, param
from llmforge.data.mixture import MixtureStage
from llmforge.data.tokens import TokenStore
from llmforge.errors import BadInput

IGNORE = -100


@dataclass(frozen=True)
class DataConfig:
    """Where training rows come from and how they are packed."""

    stages: list[MixtureStage] = param(
        [MixtureStage()], "data stages in order, each with a token budget and a mixture"
    )
    buffer_docs: int = param(64, "random-sequential buffer size per domain (1 = sequential)")
    intra_doc_mask: bool = param(True, "mask attention between documents packed in one row")
    val_batches: int = param(4, "held-out batches per domain for validation")

    def __post_init__(self):
        check(len(self.stages) >= 1, "stages", "needs at least one stage")
        check(self.buffer_docs >= 1, "buffer_docs", "must be >= 1")
        check(self.val_batches >= 1, "val_batches", "must be >= 1")


class Batch(NamedTuple):
    """One micro-batch; all tensors are [B, S] int64."""

    inputs: torch.Tensor
    targets: torch.Tensor  # -100 where the target lies in another document (or padding)
    doc_ids: torch.Tensor | None  # document number within each row; None = plain causal
    domains: torch.Tensor  # domain index of each input token (-1 for padding)


class Source:
    """The documents of several token stores seen as one list of (store, doc) pairs."""

    def __init__(self, stores: list[TokenStore]):
        if not stores:
            raise BadInput("no tokens input given")
        first = stores[0]
        for s in stores[1:]:
            if (s.vocab_size, s.eos_id) != (first.vocab_size, first.eos_id):
                raise BadInput(
                    "tokens inputs use different tokenizers (vocab size or eos differ)",
                    path=str(s.root),
                )
        self.stores = stores
        self.domains = list(dict.fromkeys(d for s in stores for d in s.domains))
        self.eos_id = first.eos_id

    def docs_in(self, domain: str) -> np.ndarray:
        """[n, 2] (store index, doc index) of a domain's documents, in storage order."""
        parts = [
            np.stack([np.full(len(idx), k), idx], axis=1)
            for k, s in enumerate(self.stores)
            if domain in s.domains and len(idx := s.docs_in(domain))
        ]
        return np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)

    def tokens(self, ref) -> np.ndarray:
        return self.stores[int(ref[0])].doc(int(ref[1]))

    def domain_docs(self) -> dict[str, int]:
        return {d: len(self.docs_in(d)) for d in self.domains}

    def domain_tokens(self) -> dict[str, int]:
        counts = dict.fromkeys(self.domains, 0)
        for s in self.stores:
            for d, n in s.domain_tokens().items():
                counts[d] += n
        return counts


class DomainReader:
    """A random-sequential buffer over one domain's shard of documents."""

    def __init__(self, docs: np.ndarray, buffer_docs: int, seed: int, key: tuple[int, ...]):
        if len(docs) == 0:
            raise BadInput("a domain with weight > 0 has no documents on this rank")
        self.docs, self.seed, self.key = docs, seed, key
        self.epoch, self.cursor = 0, 0
        self.order = np.arange(len(docs))
        self.buffer = [self._read() for _ in range(min(buffer_docs, len(docs)))]

    def _read(self) -> int:
        """Position (into `docs`) of the next document in reading order."""
        if self.cursor == len(self.order):
            self.epoch, self.cursor = self.epoch + 1, 0
            self.order = self._order(self.epoch)
        pos = int(self.order[self.cursor])
        self.cursor += 1
        return pos

    def _order(self, epoch: int) -> np.ndarray:
        if epoch == 0:
            return np.arange(len(self.docs))
        return np.random.default_rng([self.seed, *self.key, epoch]).permutation(len(self.docs))

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        slot = int(rng.integers(len(self.buffer)))
        pos, self.buffer[slot] = self.buffer[slot], self._read()
        return self.docs[pos]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "buffer": list(self.buffer)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self.buffer = list(state["buffer"])
        self.order = self._order(self.epoch)


class RowPacker:
    """Packs documents from `next_doc()` into rows of `length` tokens, carrying cut documents."""

    def __init__(self, next_doc: Callable[[], tuple[np.ndarray, int] | None], length: int):
        self.next_doc, self.length = next_doc, length
        self.carry: tuple[np.ndarray, int] | None = None  # (remaining tokens, domain)

    def row(self, eos_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
        """(tokens, doc numbers, domains, filled); None when the documents ran out at once."""
        tokens = np.full(self.length, eos_id, dtype=np.int64)
        docs = np.full(self.length, -1, dtype=np.int64)
        domains = np.full(self.length, -1, dtype=np.int64)
        fill, k = 0, 0
        while fill < self.length:
            item = self.carry if self.carry is not None else self.next_doc()
            if item is None:
                break
            doc, domain = item
            take = min(len(doc), self.length - fill)
            tokens[fill : fill + take] = doc[:take]
            docs[fill : fill + take], domains[fill : fill + take] = k, domain
            self.carry = (doc[take:], domain) if take < len(doc) else None
            fill, k = fill + take, k + 1
        return None if fill == 0 else (tokens, docs, domains, fill)


def to_batch(
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]], mask: bool = True
) -> Batch:
    """Rows of seq_len + 1 tokens -> shifted inputs/targets with boundary targets ignored.

    With `mask=False` documents see each other (plain causal attention, doc_ids None) and
    only padding targets are ignored.
    """
    tokens = torch.from_numpy(np.stack([r[0] for r in rows]))
    docs = torch.from_numpy(np.stack([r[1] for r in rows]))
    domains = torch.from_numpy(np.stack([r[2] for r in rows]))
    targets = tokens[:, 1:].clone()
    crosses = (docs[:, 1:] != docs[:, :-1]) if mask else torch.zeros_like(targets, dtype=torch.bool)
    targets[crosses | (docs[:, 1:] < 0)] = IGNORE
    doc_ids = docs[:, :-1].clone()
    doc_ids[doc_ids < 0] = doc_ids.max() + 1  # padding forms its own "document"
    if not mask:
        doc_ids = None
    return Batch(tokens[:, :-1].contiguous(), targets, doc_ids, domains[:, :-1].contiguous())


def document_probabilities(token_weights: np.ndarray, source: Source) -> np.ndarray:
    """Per-draw domain probabilities that make each domain's *token* share match its weight.

    Mixture weights are token shares (as in RegMix and SmolLM3), but the loader draws whole
    documents, so a domain is drawn with probability proportional to weight / mean length.
    """
    tokens, docs = source.domain_tokens(), source.domain_docs()
    mean_len = np.array([tokens[d] / max(docs[d], 1) for d in source.domains], dtype=np.float64)
    p = np.where(token_weights > 0, token_weights / np.maximum(mean_len, 1.0), 0.0)
    return p / p.sum()


class PackedLoader:
    """Infinite micro-batches of packed rows, following a multi-stage mixture schedule.

    `stage_ends[i]` is the optimizer step at which stage i ends and `weights[i]` its mixture
    (token shares, a vector over `source.domains`). The loader counts micro-batches itself, so it knows
    the step from `grad_accum`.
    """

    def __init__(self, source: Source, weights: list[np.ndarray], stage_ends: list[int],
                 batch_size: int, seq_len: int, grad_accum: int = 1, buffer_docs: int = 64,
                 seed: int = 0, rank: int = 0, world_size: int = 1, intra_doc_mask: bool = True):  # fmt: skip
        self.source, self.stage_ends = source, stage_ends
        self.weights = [document_probabilities(w, source) for w in weights]
        self.batch_size, self.grad_accum, self.rank = batch_size, grad_accum, rank
        self.intra_doc_mask = intra_doc_mask
        self.rng = np.random.default_rng([seed, rank])
        used = np.flatnonzero(np.max(weights, axis=0) > 0)
        self.readers = {
            int(d): DomainReader(
                source.docs_in(source.domains[d])[rank::world_size],
                buffer_docs,
                seed,
                (rank, int(d)),
            )
            for d in used
        }
        self.packer = RowPacker(self._next_doc, seq_len + 1)
        self.micro_batches = 0
        self.tokens_seen = np.zeros(len(source.domains), dtype=np.int64)

    @property
    def stage(self) -> int:
        step = self.micro_batches // self.grad_accum
        return next(
            (i for i, end in enumerate(self.stage_ends) if step < end), len(self.stage_ends) - 1
        )

    def _next_doc(self) -> tuple[np.ndarray, int]:
        domain = int(self.rng.choice(len(self.source.domains), p=self.weights[self.stage]))
        return self.source.tokens(self.readers[domain].draw(self.rng)), domain

    def next_batch(self) -> Batch:
        rows = [self.packer.row(self.source.eos_id) for _ in range(self.batch_size)]
        batch = to_batch(rows, self.intra_doc_mask)
        self.micro_batches += 1
        seen = batch.domains[batch.domains >= 0]
        self.tokens_seen += np.bincount(seen.numpy(), minlength=len(self.tokens_seen))
        return batch

    def shares(self) -> dict[str, float]:
        """Share of input tokens seen so far per domain."""
        total = max(int(self.tokens_seen.sum()), 1)
        return {d: int(n) / total for d, n in zip(self.source.domains, self.tokens_seen)}

    def state_dict(self) -> dict:
        carry = self.packer.carry
        return {
            "rng": self.rng.bit_generator.state,
            "readers": {str(d): r.state_dict() for d, r in self.readers.items()},
            "carry": None if carry is None else [carry[0].tolist(), carry[1]],
            "micro_batches": self.micro_batches,
            "tokens_seen": self.tokens_seen.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        for d, r in self.readers.items():
            r.load_state_dict(state["readers"][str(d)])
        carry = state["carry"]
        self.packer.carry = None if carry is None else (np.asarray(carry[0], np.int64), carry[1])
        self.micro_batches = state["micro_batches"]
        self.tokens_seen = np.asarray(state["tokens_seen"], dtype=np.int64)


def validation_batches(store: TokenStore, domain: str, batch_size: int, seq_len: int,
                       max_batches: int, mask: bool = True) -> list[Batch]:  # fmt: skip
    """Fixed held-out batches of one domain: its documents packed in order, the tail padded."""
    docs = iter(store.docs_in(domain))
    d = store.domains.index(domain)

    def next_doc():
        i = next(docs, None)
        return None if i is None else (np.asarray(store.doc(int(i)), dtype=np.int64), d)

    packer, batches = RowPacker(next_doc, seq_len + 1), []
    while len(batches) < max_batches:
        rows = [r for r in (packer.row(store.eos_id) for _ in range(batch_size)) if r is not None]
        if not rows:
            break
        batches.append(to_batch(rows, mask))
        if len(rows) < batch_size:
            break
    return batches
