"""The tokenize stage: raw documents (or corpus artifacts) to a `tokens` artifact.

    llmforge tokenize literature=data/lit.jsonl code=data/code/ -o artifacts/tokens

Each `domain=PATH` input is read as jsonl, jsonl.gz, parquet or a folder of text files.
A byte-level BPE is trained when no `tokenizer=PATH` is given. The tokenizer is published
inside the output as its own `tokenizer` artifact (OUT/tokenizer). Documents are split into
train and val per domain and shuffled offline.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmforge import artifact, log
from llmforge.artifact import Ref, Run
from llmforge.config import check, param
from llmforge.data import sources, tokens
from llmforge.data import tokenizer as toklib
from llmforge.errors import BadInput
from llmforge.stage import Inputs, Role, Stage


@dataclass(frozen=True)
class Config:
    vocab_size: int = param(8192, "BPE vocabulary size when training a tokenizer")
    min_frequency: int = param(2, "minimum pair frequency for a BPE merge")
    train_sample_mb: float = param(200.0, "at most this many MB of text train the tokenizer")
    text_field: str = param("text", "JSON field (or parquet column) holding the text")
    val_fraction: float = param(0.01, "share of each domain's documents held out for validation")
    val_min_docs: int = param(1, "at least this many validation documents per domain")
    min_chars: int = param(1, "documents shorter than this many characters are dropped")
    seed: int = param(0, "seed of the offline shuffle and the train/val split")
    batch_docs: int = param(1000, "documents encoded per batch")
    skip_bad_lines: bool = param(False, "count bad jsonl lines and write them to rejects.jsonl")

    def __post_init__(self):
        check(self.vocab_size >= 300, "vocab_size", "must be >= 300 (256 bytes + specials)")
        check(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")
        check(self.val_min_docs >= 0, "val_min_docs", "must be >= 0")
        check(self.batch_docs >= 1, "batch_docs", "must be >= 1")
        check(self.train_sample_mb > 0, "train_sample_mb", "must be > 0")


def _doc_stream(inputs: list[Ref], cfg: Config, rejects: sources.Rejects):
    """All documents of all data inputs; a corpus artifact is read from its documents/."""
    for ref in inputs:
        path = ref.path / "documents" if ref.kind == "corpus" else ref.path
        fallback = ref.role if ref.role != "data" else ref.path.name.split(".")[0]
        for doc in sources.iter_documents(
            path, fallback, cfg.text_field, cfg.skip_bad_lines, rejects
        ):
            if len(doc.text) >= cfg.min_chars:
                yield doc


def _tokenizer_path(given: Ref) -> Path:
    return given.path / "tokenizer" if given.kind == "tokens" else given.path


def _tokenizer(cfg: Config, data: list[Ref], given: Ref | None):
    if given is not None:
        path = _tokenizer_path(given)
        # A transformers tokenizer stays as it is (a model's embeddings fit its ids); a bare
        # tokenizer.json gets our special tokens, as a trained one has.
        return toklib.load_tokenizer_json(path, add_missing=not path.is_dir()), "given"
    budget = int(cfg.train_sample_mb * 1e6)

    def texts():
        used = 0
        for doc in _doc_stream(data, cfg, sources.Rejects()):
            used += len(doc.text)
            yield doc.text
            if used >= budget:
                return

    log.info(f"training a byte-level BPE with {cfg.vocab_size} tokens")
    return toklib.train_bpe(texts(), cfg.vocab_size, cfg.min_frequency), "trained"


def _encode_all(
    tok, eos: int, cfg: Config, data: list[Ref], work: Path, rejects
) -> tuple[dict, dict]:
    """Encode every document, each ended by `eos`, into a temporary store in reading order."""
    domains: dict[str, int] = {}
    writer = tokens.TokenWriter(work, "all", tokens.dtype_for(tok.get_vocab_size()))
    stats = {"bytes": 0, "documents": 0}
    total = sum(
        f.stat().st_size
        for r in data
        for f in sources.source_files(r.path / "documents" if r.kind == "corpus" else r.path)
    )
    stream = _doc_stream(data, cfg, rejects)
    # Encoding runs in a thread (the Rust tokenizer releases the GIL and uses both cores)
    # while this thread parses the next batch of JSON.
    with ThreadPoolExecutor(1) as pool, log.progress("tokenize", total=total) as bar:
        pending = None
        while True:
            batch = list(itertools.islice(stream, cfg.batch_docs))
            if pending is not None:
                _write_batch(writer, *pending.result(), eos, domains, stats, bar)
            if not batch:
                break
            pending = pool.submit(_encode_batch, tok, batch)
        bar.total(stats["bytes"])
    return writer.close(), {"domains": domains, **stats}


def _encode_batch(tok, batch):
    return batch, tok.encode_batch_fast([d.text for d in batch], add_special_tokens=False)


def _write_batch(writer, batch, encodings, eos, domains, stats, bar) -> None:
    lengths = [len(enc.ids) + 1 for enc in encodings]
    flat = np.empty(sum(lengths), dtype=writer.dtype)
    pos = 0
    for enc, length in zip(encodings, lengths):
        flat[pos : pos + length - 1] = enc.ids
        flat[pos + length - 1] = eos
        pos += length
    doc_domains = [domains.setdefault(doc.domain, len(domains)) for doc in batch]
    writer.add_many(flat, lengths, doc_domains)
    nbytes = sum(len(doc.text.encode("utf-8")) for doc in batch)
    stats["bytes"] += nbytes
    stats["documents"] += len(batch)
    bar.advance(nbytes)


def _split_and_shuffle(work: Path, out: Path, cfg: Config, n_domains: int, dtype) -> dict:
    """Hold out val documents per domain, shuffle each split, copy into the final store."""
    index = np.load(work / "all" / "docs.npy")
    flat = np.memmap(work / "all" / "tokens.bin", dtype=dtype, mode="r")
    rng = np.random.default_rng(cfg.seed)
    val = []
    for d in range(n_domains):
        ids = np.flatnonzero(index[:, 2] == d)
        n_val = max(cfg.val_min_docs, round(cfg.val_fraction * len(ids))) if cfg.val_fraction else 0
        n_val = min(n_val, max(len(ids) - 1, 0))
        val.extend(rng.permutation(ids)[:n_val].tolist())
    is_val = np.zeros(len(index), dtype=bool)
    is_val[val] = True
    counts = {}
    for split, mask in (("train", ~is_val), ("val", is_val)):
        writer = tokens.TokenWriter(out, split, dtype)
        for i in rng.permutation(np.flatnonzero(mask)):
            start, length, dom = index[i]
            writer.add(flat[start : start + length], int(dom))
        counts[split] = writer.close()
    return counts


def run(cfg: Config, inputs: Inputs, out: Run) -> dict:
    started = time.time()
    data = [r for r in inputs.refs if r.role != "tokenizer"]
    if not data:
        raise BadInput("tokenize needs at least one data input (domain=PATH)")
    given = inputs.get("tokenizer")
    tok, origin = _tokenizer(cfg, data, given)
    tok_dir = out.dir / "tokenizer"
    if given is not None and _tokenizer_path(given).is_dir():
        toklib.copy_tokenizer_files(_tokenizer_path(given), tok_dir)
        eos = toklib.document_separator(tok, _tokenizer_path(given))
    else:
        toklib.save_for_transformers(tok, tok_dir)
        eos = tok.token_to_id(toklib.DOC_SEP)
    rejects = sources.Rejects(out.dir / "rejects.jsonl" if cfg.skip_bad_lines else None)
    t0 = time.time()
    try:
        written, stats = _encode_all(tok, eos, cfg, data, out.work, rejects)
    finally:
        rejects.close()
    if stats["documents"] == 0:
        raise BadInput("the inputs hold no documents", path=str(data[0].path))
    domains = sorted(stats["domains"], key=stats["domains"].get)
    dtype = tokens.dtype_for(tok.get_vocab_size())
    counts = _split_and_shuffle(out.work, out.dir, cfg, len(domains), dtype)
    encode_s = time.time() - t0
    tokens.write_meta(out.dir, domains, dtype, eos, tok.get_vocab_size(), counts)
    per_domain = {split: tokens.TokenStore(out.dir, split).domain_tokens() for split in counts}
    tok_cfg = {"vocab_size": cfg.vocab_size, "min_frequency": cfg.min_frequency, "origin": origin}
    artifact.write_nested(
        tok_dir, "tokenizer", "tokenize", tok_cfg, inputs.refs, {"vocab_size": tok.get_vocab_size()}
    )
    total_tokens = sum(c["tokens"] for c in counts.values())
    return {
        "tokens": total_tokens,
        "documents": stats["documents"],
        "bytes": stats["bytes"],
        "train_tokens": counts["train"]["tokens"],
        "val_tokens": counts["val"]["tokens"],
        "tokens_per_domain": per_domain["train"],
        "val_tokens_per_domain": per_domain["val"],
        "vocab_size": tok.get_vocab_size(),
        "tokenizer": origin,
        "rejected_lines": rejects.count,
        "encode_seconds": round(encode_s, 3),
        "mb_per_s": round(stats["bytes"] / 1e6 / max(encode_s, 1e-9), 3),
        "tokens_per_s": round(total_tokens / max(encode_s, 1e-9), 1),
        "seconds": round(time.time() - started, 3),
    }


STAGE = Stage(
    name="tokenize",
    kind="tokens",
    config=Config,
    run=run,
    roles={
        "*": Role(
            kinds=("raw", "corpus"),
            min=0,
            max=None,
            help="domain=PATH: jsonl, jsonl.gz, parquet, a text folder or a corpus artifact",
        ),
        "tokenizer": Role(
            kinds=("tokenizer", "tokens", "model", "raw"),
            min=0,
            max=1,
            help="an existing tokenizer (artifact, tokenizer.json or transformers dir)",
        ),
    },
    default_role="data",
    help="Tokenize documents into a tokens artifact (training a BPE tokenizer if none is given).",
    flags={"skip-bad-lines": "skip_bad_lines"},
)
