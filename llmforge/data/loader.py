"""The pretraining data loader: mixture sampling, random-sequential buffers and packing.

Every training row is built the same way:

1. pick a domain with the current stage's mixture weights;
2. take a document from that domain's *random-sequential buffer* (Trinity style): documents
   are read in index order (the tokenize stage already shuffled them offline) into a
   buffer of `buffer_docs`, and each draw takes a random slot and refills it with the next
   document, so the order is mixed further at no cost;
3. pack documents end to end into `seq_len + 1` tokens; a document that does not fit
   continues at the start of the next row. `doc_ids` number the documents of a row so the
   model masks attention across them, and targets that would cross a document boundary
   are ignored (-100).

There is one stream of rows for the whole run, the *global order*, whatever the number of
ranks: every rank draws the same documents with the same random stream and plans the same
rows (planning needs only document lengths), then reads the tokens of its own rows. Each
call to `next_batch` consumes `batch_size * world_size` global rows and hands rank r the
r-th block of `batch_size`; an optimizer step is `micro_batches()` such calls, as many as
the `BatchPlan` (batch_plan.py) gives that step: `grad_accum` at the full batch, fewer
during a batch-size warmup. The data position is therefore one global count of rows plus
the sampler state (random state, buffers, cursors, the document cut across rows) and the
plan: a small JSON-able `state_dict()`, the same on every rank. A run saved on 2 ranks
resumes on 1 or 4 into the same stream, with the plan's rows per step kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from llmforge.config import check, param
from llmforge.data.batch_plan import BatchPlan
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

    def length(self, ref) -> int:
        return self.stores[int(ref[0])].length(int(ref[1]))

    def domain_docs(self) -> dict[str, int]:
        return {d: len(self.docs_in(d)) for d in self.domains}

    def domain_tokens(self) -> dict[str, int]:
        counts = dict.fromkeys(self.domains, 0)
        for s in self.stores:
            for d, n in s.domain_tokens().items():
                counts[d] += n
        return counts


class DomainReader:
    """A random-sequential buffer over one domain's documents."""

    def __init__(self, docs: np.ndarray, buffer_docs: int, seed: int, key: tuple[int, ...]):
        if len(docs) == 0:
            raise BadInput("a domain with weight > 0 has no documents")
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


Segment = tuple  # (document ref, start, take, domain): a piece of one document in a row


class RowPacker:
    """Plans rows of `length` tokens from `next_doc()`, carrying a cut document into the next row.

    `next_doc()` gives (ref, length, domain) or None when the documents ran out. Planning
    needs document lengths only, so every rank can follow the one global stream of rows
    and read the tokens of its own rows alone (`fill_row`).
    """

    def __init__(self, next_doc: Callable[[], tuple[Any, int, int] | None], length: int):
        self.next_doc, self.length = next_doc, length
        self.carry: tuple[Any, int, int, int] | None = None  # (ref, offset, length, domain)

    def plan(self) -> list[Segment] | None:
        """The segments of the next row; None when the documents ran out at once."""
        segments, fill = [], 0
        while fill < self.length:
            if self.carry is not None:
                ref, offset, size, domain = self.carry
            else:
                item = self.next_doc()
                if item is None:
                    break
                (ref, size, domain), offset = item, 0
            take = min(size - offset, self.length - fill)
            segments.append((ref, offset, take, domain))
            self.carry = (ref, offset + take, size, domain) if offset + take < size else None
            fill += take
        return segments or None


def fill_row(segments: list[Segment], length: int, eos_id: int,
             read: Callable[[Any], np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:  # fmt: skip
    """(tokens, document numbers, domains, filled) of one planned row; the tail is eos padding."""
    tokens = np.full(length, eos_id, dtype=np.int64)
    docs = np.full(length, -1, dtype=np.int64)
    domains = np.full(length, -1, dtype=np.int64)
    fill = 0
    for k, (ref, start, take, domain) in enumerate(segments):
        tokens[fill : fill + take] = read(ref)[start : start + take]
        docs[fill : fill + take], domains[fill : fill + take] = k, domain
        fill += take
    return tokens, docs, domains, fill


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


def grad_accum_for(global_batch_rows: int, batch_size: int, world_size: int) -> int:
    """Micro-batches per step that keep a run's global batch on `world_size` ranks.

    A checkpoint fixes the global batch (rows per optimizer step); the per-rank
    `batch_size` is fixed by the config, so gradient accumulation makes up the difference.
    """
    BatchPlan(global_batch_rows).check_ranks(batch_size, world_size)
    return global_batch_rows // (batch_size * world_size)


class PackedLoader:
    """Infinite micro-batches of packed rows, following a multi-stage mixture schedule.

    `stage_ends[i]` is the optimizer step at which stage i ends and `weights[i]` its mixture
    (token shares, a vector over `source.domains`). `plan` gives the global rows of every
    step (default: `batch_size * grad_accum * world_size` each). The loader counts global
    rows itself, so it knows its step from the plan.
    """

    def __init__(self, source: Source, weights: list[np.ndarray], stage_ends: list[int],
                 batch_size: int, seq_len: int, grad_accum: int = 1, buffer_docs: int = 64,
                 seed: int = 0, rank: int = 0, world_size: int = 1, intra_doc_mask: bool = True,
                 plan: BatchPlan | None = None):  # fmt: skip
        self.source, self.stage_ends = source, stage_ends
        self.weights = [document_probabilities(w, source) for w in weights]
        self.batch_size, self.seq_len = batch_size, seq_len
        self.rank, self.world_size = rank, world_size
        self.plan = plan or BatchPlan(batch_size * grad_accum * world_size, seq_len)
        self.grad_accum = self.plan.full // (batch_size * world_size)  # at the full batch
        self.intra_doc_mask = intra_doc_mask
        # one random stream and one set of readers for all ranks: the global order
        self.rng = np.random.default_rng([seed, 0])
        used = np.flatnonzero(np.max(weights, axis=0) > 0)
        self.readers = {
            int(d): DomainReader(source.docs_in(source.domains[d]), buffer_docs, seed, (0, int(d)))
            for d in used
        }
        self.packer = RowPacker(self._next_doc, seq_len + 1)
        self.rows = 0  # global rows planned so far: the data position
        self.tokens_seen = np.zeros(len(source.domains), dtype=np.int64)

    @property
    def global_batch_rows(self) -> int:
        """Rows per optimizer step at the full batch."""
        return self.plan.full

    @property
    def data_step(self) -> int:
        """The optimizer step the next rows belong to (the loop's step, unless it rewound)."""
        return self.plan.steps_in(self.rows)

    def micro_batches(self) -> int:
        """`next_batch` calls that make up the coming optimizer step on this rank."""
        return self.plan.micro_batches(self.data_step, self.batch_size, self.world_size)

    @property
    def stage(self) -> int:
        step = self.data_step
        return next(
            (i for i, end in enumerate(self.stage_ends) if step < end), len(self.stage_ends) - 1
        )

    def _next_doc(self) -> tuple[np.ndarray, int, int]:
        domain = int(self.rng.choice(len(self.source.domains), p=self.weights[self.stage]))
        ref = self.readers[domain].draw(self.rng)
        return ref, self.source.length(ref), domain

    def _plan_pass(self) -> list[list[Segment]]:
        """The next `batch_size * world_size` global rows (one micro-batch of every rank)."""
        plans = [self.packer.plan() for _ in range(self.batch_size * self.world_size)]
        self.rows += len(plans)
        for segments in plans:  # input tokens (the first seq_len of a row) per domain
            pos = 0
            for _, _, take, domain in segments:
                self.tokens_seen[domain] += max(0, min(take, self.seq_len - pos))
                pos += take
        return plans

    def next_batch(self) -> Batch:
        plans = self._plan_pass()
        mine = plans[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        eos, length = self.source.eos_id, self.seq_len + 1
        rows = [fill_row(p, length, eos, self.source.tokens) for p in mine]
        return to_batch(rows, self.intra_doc_mask)

    def skip_rows(self, n: int) -> None:
        """Advance the position by about `n` global rows without reading tokens."""
        while self.rows < n:
            self._plan_pass()

    def shares(self) -> dict[str, float]:
        """Share of input tokens seen so far per domain, over all ranks."""
        total = max(int(self.tokens_seen.sum()), 1)
        return {d: int(n) / total for d, n in zip(self.source.domains, self.tokens_seen)}

    def state_dict(self) -> dict:
        carry = self.packer.carry
        return {
            "format": 2,
            "rng": self.rng.bit_generator.state,
            "readers": {str(d): r.state_dict() for d, r in self.readers.items()},
            "carry": None if carry is None else [*map(int, carry[0]), *carry[1:]],
            "rows": self.rows,
            "global_batch_rows": self.global_batch_rows,
            "batch_plan": self.plan.state_dict(),
            "tokens_seen": self.tokens_seen.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != 2:
            raise ValueError("not a global data position (format 2); see Loop.resume")
        saved = saved_plan(state, self.seq_len)
        if saved != self.plan:
            raise BadInput(
                f"the checkpoint's batch plan is {saved}, this loader's {self.plan} "
                "(build the loader with the checkpoint's plan: saved_plan)"
            )
        self.rng.bit_generator.state = state["rng"]
        for d, r in self.readers.items():
            r.load_state_dict(state["readers"][str(d)])
        carry = state["carry"]
        self.packer.carry = None if carry is None else (np.asarray(carry[:2]), *carry[2:])
        self.rows = state["rows"]
        self.tokens_seen = np.asarray(state["tokens_seen"], dtype=np.int64)


def saved_plan(state: dict, seq_len: int) -> BatchPlan:
    """The batch plan of a saved data position (a constant one before batch warmup)."""
    if "batch_plan" in state:
        return BatchPlan.from_state(state["batch_plan"])
    return BatchPlan(state["global_batch_rows"], seq_len)


def validation_batches(store: TokenStore, domain: str, batch_size: int, seq_len: int,
                       max_batches: int, mask: bool = True) -> list[Batch]:  # fmt: skip
    """Fixed held-out batches of one domain: its documents packed in order, the tail padded."""
    docs = iter(store.docs_in(domain))
    d = store.domains.index(domain)

    def next_doc():
        i = next(docs, None)
        return None if i is None else (int(i), store.length(int(i)), d)

    packer, batches = RowPacker(next_doc, seq_len + 1), []
    while len(batches) < max_batches:
        plans = [p for p in (packer.plan() for _ in range(batch_size)) if p is not None]
        if not plans:
            break
        batches.append(
            to_batch([fill_row(p, seq_len + 1, store.eos_id, store.doc) for p in plans], mask)
        )
        if len(plans) < batch_size:
            break
    return batches
