"""Benchmark: `llmforge tokenize` (1 task, then `--tasks` local processes) against raw
`tokenizers` encode_batch on the same corpus.

    .venv/bin/python bench/tokenize_bench.py [--mb 30] [--tasks 2]

The corpus is the Python standard library's sources cut into ~4 KB jsonl documents, in 4
files (a task takes whole files). Both sides use the same 32k BPE and both cores. The
baseline only encodes texts already in memory; llmforge also reads and parses the jsonl,
writes the token shards and index, splits and shuffles offline, and hashes the payload into
the manifest. One-off library imports are excluded from both sides; the tasks' worker
processes pay their own imports (about a second each), which the figure includes.
"""

from __future__ import annotations

import argparse
import json
import os
import sysconfig
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LLMFORGE_QUIET", "1")


def build_corpus(folder: Path, target_mb: float, files: int = 4) -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts, size = [], 0
    for f in sorted(stdlib.rglob("*.py")):
        try:
            src = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for i in range(0, len(src), 4000):
            texts.append(src[i : i + 4000])
            size += len(texts[-1])
        if size >= target_mb * 1e6:
            break
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-len(texts) // files)
    for k in range(files):
        with open(folder / f"part{k}.jsonl", "w", encoding="utf-8") as fh:
            for i, t in enumerate(texts[k * per_file : (k + 1) * per_file]):
                fh.write(json.dumps({"id": f"d{k}-{i}", "text": t}) + "\n")
    return texts


def train_tokenizer(texts: list[str], out: Path) -> Path:
    from llmforge.data.tokenizer import train_bpe

    tok = train_bpe(texts[: len(texts) // 4], vocab_size=32000)
    tok.save(str(out))
    return out


def baseline(tok_path: Path, texts: list[str]) -> tuple[float, int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_path))
    start = time.perf_counter()
    n = 0
    for i in range(0, len(texts), 1000):
        n += sum(
            len(e.ids) for e in tok.encode_batch(texts[i : i + 1000], add_special_tokens=False)
        )
    return time.perf_counter() - start, n


def llmforge_run(tok_path: Path, corpus: Path, out: Path, tasks: int) -> tuple[float, int]:
    # Library imports (torch for the manifest's host record, transformers to save the
    # tokenizer) cost a few seconds once per process; like the baseline's import of
    # tokenizers, they are kept out of the throughput figure.
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from llmforge import artifact
    from llmforge.stage import execute
    from stages.tokenize import STAGE

    start = time.perf_counter()
    execute(STAGE, [f"code={corpus}", f"tokenizer={tok_path}"], out=out, sets=[f"tasks={tasks}"])
    elapsed = time.perf_counter() - start
    return elapsed, artifact.read_manifest(out)["metrics"]["tokens"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=30.0, help="corpus size in MB")
    parser.add_argument("--tasks", type=int, default=2, help="tasks of the second llmforge run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        texts = build_corpus(tmp / "corpus", args.mb)
        mb = sum(len(t.encode()) for t in texts) / 1e6
        tok = train_tokenizer(texts, tmp / "tokenizer.json")
        base_s, base_tokens = baseline(tok, texts)
        ours = {n: llmforge_run(tok, tmp / "corpus", tmp / f"out{n}", n) for n in (1, args.tasks)}
    docs = len(texts)
    print(f"corpus: {docs} docs, {mb:.1f} MB, 32k BPE, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'':30}{'MB/s':>8}{'Mtok/s':>9}{'seconds':>9}")
    rows = [("tokenizers encode_batch", base_s, base_tokens)]
    rows += [(f"llmforge tokenize, {n} task(s)", s_, t) for n, (s_, t) in ours.items()]
    for name, seconds, n_tokens in rows:
        print(f"{name:30}{mb / seconds:8.2f}{n_tokens / seconds / 1e6:9.3f}{seconds:9.2f}")
    for n, (seconds, n_tokens) in ours.items():
        print(f"ratio llmforge ({n} task(s))/baseline: {base_s / seconds:.2f}x (goal >= 0.8x)")
        # llmforge appends one separator token per document
        assert n_tokens == base_tokens + docs, (n_tokens, base_tokens, docs)


if __name__ == "__main__":
    main()
