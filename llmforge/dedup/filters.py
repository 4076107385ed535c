"""datatrove pipeline steps that datatrove lacks: the OLMo 2 repeated n-gram filter,
decontamination against eval items, length bounds, a domain gate around any filter, a
domain router, and the row formats our jsonl writers use.

The decontamination filter is written here rather than taken from datatrove's
`NGramsDecontIndexer`/`NGramsDecontFilter` because those need lighteval task tables and do
not say which eval item a document matched; the report must name the hit items.
"""

from __future__ import annotations

import re

import numpy as np
import orjson
import xxhash
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.text import TextNormConfig, simplify_text

_TOKEN = re.compile(r"\w+|[^\w\s]")
# decontamination must tell "12 + 7" from "13 + 8", so digits are kept as they are
_DECONTAM_NORM = TextNormConfig(norm_numbers=False)
_ROLL = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier for the rolling n-gram hash


# ---------------------------------------------------------------- repeated n-grams


def longest_repeat(tokens: list[str], max_span: int) -> tuple[int, int]:
    """The (span length, times in a row) of the most repeated span of 1..max_span tokens.

    A span of length p repeated r times in a row is a run where token[i] == token[i+p]
    holds for (r-1)*p consecutive positions; numpy finds the longest such run per p.
    """
    ids = np.fromiter((hash(t) for t in tokens), dtype=np.int64, count=len(tokens))
    best = (1, 1 if len(tokens) else 0)
    for span in range(1, min(max_span, len(tokens) // 2) + 1):
        run = _longest_true_run(ids[span:] == ids[:-span])
        repeats = run // span + 1
        if repeats > best[1]:
            best = (span, repeats)
    return best


def _longest_true_run(mask: np.ndarray) -> int:
    if not mask.any():
        return 0
    edges = np.diff(np.concatenate(([0], mask.view(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int((ends - starts).max())


class RepeatedNgramFilter(BaseFilter):
    """Drop a document in which a span of 1..max_span tokens repeats min_repeats+ times in a
    row (OLMo 2's loss-spike filter). Tokens are words and single punctuation marks."""

    name = "repeated n-grams"

    def __init__(self, max_span: int = 13, min_repeats: int = 32, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.max_span, self.min_repeats = max_span, min_repeats

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        tokens = _TOKEN.findall(doc.text)
        if len(tokens) < self.min_repeats:
            return True
        span, repeats = longest_repeat(tokens, self.max_span)
        if repeats >= self.min_repeats:
            return False, f"a {span}-token span repeats {repeats} times"
        return True


# ---------------------------------------------------------------- decontamination


def ngram_hashes(text: str, n: int) -> np.ndarray:
    """Stable 64-bit hashes of every word n-gram of the normalised text (empty if short)."""
    words = simplify_text(text, _DECONTAM_NORM).split()
    if len(words) < n:
        return np.empty(0, dtype=np.uint64)
    ids = np.fromiter((xxhash.xxh3_64_intdigest(w) for w in words), np.uint64, len(words))
    count = len(words) - n + 1
    acc = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):  # uint64 wrap-around is the hash
        for k in range(n):
            acc = acc * _ROLL + ids[k : k + count]
    return acc


class DecontaminationFilter(BaseFilter):
    """Drop documents sharing an n-gram with an eval item; record the items hit.

    The index (n-gram hash -> eval items) is built lazily in each worker from a jsonl file
    of `{"source","id","text"}` rows, so the pipeline pickles only a path.
    """

    name = "decontamination"

    def __init__(self, evals_path: str, ngram: int = 13, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.evals_path, self.ngram = evals_path, ngram
        self._index: dict[int, list[str]] | None = None

    def _load(self) -> dict[int, list[str]]:
        index: dict[int, list[str]] = {}
        with open(self.evals_path, "rb") as f:
            for raw in f:
                item = orjson.loads(raw)
                key = f"{item['source']}/{item['id']}"
                for h in set(ngram_hashes(item["text"], self.ngram).tolist()):
                    index.setdefault(h, []).append(key)
        return index

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self._index is None:
            self._index = self._load()
        if not self._index:
            return True
        hits = sorted(
            {k for h in ngram_hashes(doc.text, self.ngram).tolist() for k in self._index.get(h, ())}
        )
        if hits:
            doc.metadata["eval_hits"] = hits
            return False, f"shares a {self.ngram}-gram with {', '.join(hits[:5])}"
        return True


# ---------------------------------------------------------------- small helpers


class LengthFilter(BaseFilter):
    """Keep documents whose length in characters lies in [min_chars, max_chars]."""

    name = "length"

    def __init__(self, min_chars: int, max_chars: int, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.min_chars, self.max_chars = min_chars, max_chars

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if len(doc.text) < self.min_chars:
            return False, f"{len(doc.text)} chars < {self.min_chars}"
        if len(doc.text) > self.max_chars:
            return False, f"{len(doc.text)} chars > {self.max_chars}"
        return True


class DomainGate(BaseFilter):
    """Apply an inner datatrove filter only to documents outside `skip_domains` that have
    at least `min_words` words."""

    def __init__(
        self, inner: BaseFilter, skip_domains: list[str], min_words: int = 0, exclusion_writer=None
    ):
        super().__init__(exclusion_writer)
        self.inner, self.skip_domains, self.min_words = inner, frozenset(skip_domains), min_words
        self.name = inner.name

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.metadata.get("domain") in self.skip_domains:
            return True
        if self.min_words and len(doc.text.split(None, self.min_words)) < self.min_words:
            return True
        return self.inner.filter(doc)


class DomainRouter(PipelineStep):
    """Write documents of `domains` with `writer` and pass the rest on (keeps a domain out
    of a later step, such as math out of MinHash)."""

    name = "domain router"

    def __init__(self, domains: list[str], writer: DiskWriter):
        super().__init__()
        self.domains, self.writer = frozenset(domains), writer

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1):
        with self.writer as out:
            for doc in data:
                if doc.metadata.get("domain") in self.domains:
                    out.write(doc, rank)
                else:
                    yield doc


def kept_row(writer: DiskWriter, doc: Document) -> dict:
    """jsonl writer adapter: the corpus row format."""
    return {"id": doc.id, "text": doc.text, "domain": doc.metadata.get("domain")}


class RemovedRow:
    """jsonl writer adapter for removed documents: the row plus why it was removed."""

    def __init__(self, reason: str):
        self.reason = reason

    def __call__(self, writer: DiskWriter, doc: Document) -> dict:
        row = kept_row(writer, doc)
        row["reason"] = self.reason
        row["detail"] = doc.metadata.get("filter_reason") or self.reason
        if "eval_hits" in doc.metadata:
            row["eval_hits"] = doc.metadata["eval_hits"]
        return row


def normalized_text(doc: Document) -> str:
    """Exact-dedup key: lowercased text with whitespace runs collapsed."""
    return " ".join(doc.text.lower().split())


def raw_text(doc: Document) -> str:
    """Exact-dedup key when normalisation is off."""
    return doc.text
