"""The datatrove pipelines of the dedup stage, as an ordered list of named steps.

    filter   quality, length, repeated n-grams, decontamination   (N tasks)
    exact    datatrove ExactDedup: signatures, find, filter+route  (N, 1, N tasks)
    minhash  datatrove MinHash stages 1-4                          (N, buckets, 1, N tasks)

Each step reads the previous step's jsonl shards under `work/` and runs on a datatrove
executor whose logging folder holds the completion markers that make a re-run skip
finished tasks. Removed documents go to `work/removed/<reason>/` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datatrove.pipeline.dedup import (
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.dedup.exact_dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
)
from datatrove.pipeline.dedup.minhash import MinhashConfig as DtMinhashConfig
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.text import TextNormConfig

from llmforge.dedup import filters as F
from llmforge.dedup.config import DedupConfig
from llmforge.dedup.layout import Layout


@dataclass
class Step:
    """One datatrove run: a name, its pipeline and how many tasks it has."""

    name: str
    pipeline: list
    tasks: int


def _reader(folder: Path) -> JsonlReader:
    return JsonlReader(str(folder), glob_pattern="*.jsonl", compression=None, add_file_path=False)


def _writer(folder: Path, adapter=F.kept_row) -> JsonlWriter:
    return JsonlWriter(
        str(folder), output_filename="${rank}.jsonl", compression=None, adapter=adapter
    )


def _removed(layout: Layout, reason: str) -> JsonlWriter:
    return _writer(layout.removed / reason, adapter=F.RemovedRow(reason))


def filter_steps(cfg: DedupConfig, layout: Layout, has_evals: bool) -> list:
    """The per-document filters, in order: cheapest and most specific first."""
    q, out = cfg.quality, []
    out.append(F.LengthFilter(q.min_chars, q.max_chars, _removed(layout, "length")))
    if cfg.repetition.enabled:
        rep = cfg.repetition
        out.append(
            F.RepeatedNgramFilter(rep.max_span, rep.min_repeats, _removed(layout, "repeated_ngram"))
        )
    if cfg.decontam.enabled and has_evals:
        out.append(
            F.DecontaminationFilter(
                str(layout.evals), cfg.decontam.ngram, _removed(layout, "decontam")
            )
        )
    if q.gopher_repetition:
        gate = F.DomainGate(
            GopherRepetitionFilter(),
            q.skip_domains,
            q.gopher_min_words,
            _removed(layout, "gopher_repetition"),
        )
        out.append(gate)
    if q.gopher_quality:
        gate = F.DomainGate(
            GopherQualityFilter(),
            q.skip_domains,
            q.gopher_min_words,
            _removed(layout, "gopher_quality"),
        )
        out.append(gate)
    if q.language:
        from llmforge.dedup.langid import LocalLanguageFilter

        out.append(
            LocalLanguageFilter(
                q.language, q.language_model, q.language_threshold, _removed(layout, "language")
            )
        )
    return out


def minhash_config(cfg: DedupConfig) -> DtMinhashConfig:
    m = cfg.minhash
    return DtMinhashConfig(
        n_grams=m.ngram,
        num_buckets=m.buckets,
        hashes_per_bucket=m.hashes_per_bucket,
        seed=m.seed,
        norm_config=TextNormConfig(norm_numbers=m.normalize_numbers),
    )


def exact_steps(cfg: DedupConfig, layout: Layout, n: int) -> list[Step]:
    """Exact dedup (when on) and the split of documents into MinHash / passthrough."""
    skip = cfg.minhash.skip_domains if cfg.minhash.enabled else None
    route_target = layout.to_minhash if cfg.minhash.enabled else layout.passthrough
    tail = [F.DomainRouter(skip, _writer(layout.passthrough))] if skip else []
    tail.append(_writer(route_target))
    if not cfg.exact.enabled:
        return [Step("route", [_reader(layout.filtered), *tail], n)]
    getter = F.normalized_text if cfg.exact.normalize else F.raw_text
    ecfg = ExactDedupConfig(content_getter=getter)
    return [
        Step(
            "exact-1",
            [_reader(layout.filtered), ExactDedupSignature(str(layout.exact_sigs), ecfg)],
            n,
        ),
        Step("exact-2", [ExactFindDedups(str(layout.exact_sigs), str(layout.exact_dups), ecfg)], 1),
        Step(
            "exact-3",
            [
                _reader(layout.filtered),
                ExactDedupFilter(str(layout.exact_dups), ecfg, _removed(layout, "exact")),
                *tail,
            ],
            n,
        ),
    ]


def minhash_steps(cfg: DedupConfig, layout: Layout, n: int) -> list[Step]:
    """datatrove's four MinHash stages, reading the exact-dedup output."""
    mcfg, base = minhash_config(cfg), layout.minhash
    sigs, buckets, remove = base / "signatures", base / "buckets", base / "remove_ids"
    return [
        Step("minhash-1", [_reader(layout.to_minhash), MinhashDedupSignature(str(sigs), mcfg)], n),
        Step(
            "minhash-2",
            [MinhashDedupBuckets(str(sigs), str(buckets), config=mcfg)],
            mcfg.num_buckets,
        ),
        Step("minhash-3", [MinhashDedupCluster(str(buckets), str(remove), config=mcfg)], 1),
        Step(
            "minhash-4",
            [
                _reader(layout.to_minhash),
                MinhashDedupFilter(str(remove), exclusion_writer=_removed(layout, "minhash")),
                _writer(layout.deduped),
            ],
            n,
        ),
    ]


def build_steps(cfg: DedupConfig, layout: Layout, has_evals: bool) -> list[Step]:
    """Every datatrove step of a run, in order."""
    n = cfg.executor.workers
    steps = [
        Step(
            "filter",
            [
                _reader(layout.input),
                *filter_steps(cfg, layout, has_evals),
                _writer(layout.filtered),
            ],
            n,
        )
    ]
    steps += exact_steps(cfg, layout, n)
    if cfg.minhash.enabled:
        steps += minhash_steps(cfg, layout, n)
    return steps
