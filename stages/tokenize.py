"""The tokenize stage: raw documents (or corpus artifacts) to a `tokens` artifact.

    llmforge tokenize literature=data/lit.jsonl code=data/code/ -o artifacts/tokens

Each `domain=PATH` input is read as jsonl, jsonl.gz, parquet or a folder of text files.
A byte-level BPE is trained when no `tokenizer=PATH` is given. The tokenizer is published
inside the output as its own `tokenizer` artifact (OUT/tokenizer). Documents are split into
train and val per domain and shuffled offline.

At scale the input files are cut into `tasks` parts, encoded by local processes or a Slurm
job array (`-s slurm.enabled=true`), one token shard each; the shuffle is a permutation
written into each split's index (llmforge/data/shards.py), so no process copies the tokens
twice. The result is the same for any number of tasks.

    llmforge tokenize web=data/web/ -s tasks=64 -s slurm.enabled=true -o artifacts/tokens
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from llmforge import artifact, log
from llmforge.artifact import Ref, Run
from llmforge.config import check, param
from llmforge.data import rows, shards, sources, tokens
from llmforge.data import tokenizer as toklib
from llmforge.errors import BadInput
from llmforge.slurm import ArrayConfig
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
    tasks: int = param(
        1, "tokenize tasks: the input files are cut into this many parts, one shard each"
    )
    workers: int = param(0, "local processes running tasks at once (0 = one per core)")
    slurm: ArrayConfig = param(ArrayConfig(), "run the tasks as a Slurm job array and wait")

    def __post_init__(self):
        check(self.vocab_size >= 300, "vocab_size", "must be >= 300 (256 bytes + specials)")
        check(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")
        check(self.val_min_docs >= 0, "val_min_docs", "must be >= 0")
        check(self.batch_docs >= 1, "batch_docs", "must be >= 1")
        check(self.train_sample_mb > 0, "train_sample_mb", "must be > 0")
        check(self.tasks >= 1, "tasks", "must be >= 1")
        check(self.workers >= 0, "workers", "must be >= 0")


def _input_files(inputs: list[Ref]) -> list[shards.InputFile]:
    """Every file of every data input, in reading order, with its fallback domain."""
    files = []
    for ref in inputs:
        path = ref.path / "documents" if ref.kind == "corpus" else ref.path
        fallback = ref.role if ref.role != "data" else ref.path.name.split(".")[0]
        if rows.is_saved_dataset(path):  # read whole by `datasets`, one task's part
            size = sum(f.stat().st_size for f in sources.source_files(path))
            files.append(shards.InputFile(str(path), fallback, size))
            continue
        files += [
            shards.InputFile(str(f), fallback, f.stat().st_size) for f in sources.source_files(path)
        ]
    return files


def _tokenizer_path(given: Ref) -> Path:
    return given.path / "tokenizer" if given.kind == "tokens" else given.path


def _tokenizer(cfg: Config, files: list[shards.InputFile], given: Ref | None):
    if given is not None:
        path = _tokenizer_path(given)
        # A transformers tokenizer stays as it is (a model's embeddings fit its ids); a bare
        # tokenizer.json gets our special tokens, as a trained one has.
        return toklib.load_tokenizer_json(path, add_missing=not path.is_dir()), "given"
    budget = int(cfg.train_sample_mb * 1e6)

    def texts():
        used = 0
        for f in files:
            for doc in sources.iter_documents(Path(f.path), f.domain, cfg.text_field,
                                              cfg.skip_bad_lines, sources.Rejects()):  # fmt: skip
                if len(doc.text) < cfg.min_chars:
                    continue
                used += len(doc.text)
                yield doc.text
                if used >= budget:
                    return

    log.info(f"training a byte-level BPE with {cfg.vocab_size} tokens")
    return toklib.train_bpe(texts(), cfg.vocab_size, cfg.min_frequency), "trained"


def _run_tasks(cfg: Config, files: list[shards.InputFile], out: Run, eos: int) -> list[Path]:
    """Cut the files into tasks, run the pending ones (locally or on Slurm); the task files."""
    parts = shards.plan_tasks(files, cfg.tasks)
    if len(parts) < cfg.tasks:
        log.warn(f"{cfg.tasks} tasks asked for but only {len(files)} input files: {len(parts)}")
    folder = out.work / "tasks"
    options = dict(text_field=cfg.text_field, skip_bad_lines=cfg.skip_bad_lines,
                   min_chars=cfg.min_chars, batch_docs=cfg.batch_docs, eos=eos)  # fmt: skip
    paths = shards.write_tasks(parts, folder, out.dir / tokens.SHARDS,
                               out.dir / "tokenizer" / "tokenizer.json", **options)  # fmt: skip
    if cfg.slurm.enabled:
        shards.run_slurm(paths, cfg.slurm, folder)
    else:
        shards.run_local(paths, cfg.workers)
    return paths


def _task_totals(paths: list[Path]) -> dict:
    results = [json.loads(shards.read_task(p).result_path().read_text()) for p in paths]
    return {k: sum(r[k] for r in results) for k in ("bytes", "documents", "rejected_lines")}


def run(cfg: Config, inputs: Inputs, out: Run) -> dict:
    started = time.time()
    data = [r for r in inputs.refs if r.role != "tokenizer"]
    if not data:
        raise BadInput("tokenize needs at least one data input (domain=PATH)")
    files = _input_files(data)
    given = inputs.get("tokenizer")
    tok, origin = _tokenizer(cfg, files, given)
    tok_dir = out.dir / "tokenizer"
    if given is not None and _tokenizer_path(given).is_dir():
        toklib.copy_tokenizer_files(_tokenizer_path(given), tok_dir)
        eos = toklib.document_separator(tok, _tokenizer_path(given))
    else:
        toklib.save_for_transformers(tok, tok_dir)
        eos = tok.token_to_id(toklib.DOC_SEP)
    t0 = time.time()
    paths = _run_tasks(cfg, files, out, eos)
    domains, counts = shards.merge(paths, out.dir, cfg.seed, cfg.val_fraction, cfg.val_min_docs)
    encode_s = time.time() - t0
    if cfg.skip_bad_lines:
        shards.merged_rejects(paths, out.dir / "rejects.jsonl")
    dtype = tokens.dtype_for(tok.get_vocab_size())
    tokens.write_meta(out.dir, domains, dtype, eos, tok.get_vocab_size(), counts)
    per_domain = {split: tokens.TokenStore(out.dir, split).domain_tokens() for split in counts}
    tok_cfg = {"vocab_size": cfg.vocab_size, "min_frequency": cfg.min_frequency, "origin": origin}
    artifact.write_nested(out.dir / "tokenizer", "tokenizer", "tokenize", tok_cfg, inputs.refs,
                          {"vocab_size": tok.get_vocab_size()})  # fmt: skip
    totals = _task_totals(paths)
    total_tokens = sum(c["tokens"] for c in counts.values())
    return {
        "tokens": total_tokens,
        "documents": totals["documents"],
        "bytes": totals["bytes"],
        "train_tokens": counts["train"]["tokens"],
        "val_tokens": counts["val"]["tokens"],
        "tokens_per_domain": per_domain["train"],
        "val_tokens_per_domain": per_domain["val"],
        "vocab_size": tok.get_vocab_size(),
        "tokenizer": origin,
        "rejected_lines": totals["rejected_lines"],
        "tasks": len(paths),
        "shards": len(counts["train"]["shards"]),
        "encode_seconds": round(encode_s, 3),
        "mb_per_s": round(totals["bytes"] / 1e6 / max(encode_s, 1e-9), 3),
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
