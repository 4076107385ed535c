"""Distributed tokenize: input files cut into tasks, one shard per task, one shuffled index.

    plan_tasks   the data inputs' files in reading order, cut into N contiguous parts of
                 about equal bytes (a file is never split between tasks)
    run_task     one task: read its files, encode, write its shard `shards/{k:05d}.bin`
                 and its result (`{k:05d}.json` + `{k:05d}.npy` in the task folder). A task
                 with a result is not run again, so a re-run after a crash does the rest
    run_local    the tasks in local processes; `run_slurm`: as one Slurm job array
                 (`python -m llmforge.data.shards TASK.json` per array task)
    merge        one domain numbering, the train/val split and the offline shuffle, written
                 as each split's document index over all the shards

The offline shuffle is a global permutation of documents that lives in the index: rows of
(shard, start, length, domain) in shuffled order. No process copies tokens after encoding,
so the shuffle costs 32 bytes per document instead of a second pass over all the tokens;
readers read whole documents at random from memory-mapped shards, as Megatron-LM's and
OLMo-core's loaders do at scale. The merge holds the index (not the tokens) in memory.

The result does not depend on the number of tasks: documents are numbered in the same
reading order however the files are cut, and the split and shuffle are drawn over that
order with the same seed.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from llmforge import log
from llmforge.data import sources, tokens
from llmforge.data import tokenizer as toklib
from llmforge.errors import BadInput, LLMForgeError, RunFailed


@dataclass(frozen=True)
class InputFile:
    path: str
    domain: str  # label of documents whose rows carry none
    size: int


@dataclass(frozen=True)
class Task:
    """What one task encodes and where it writes; saved as `{index:05d}.task.json`."""

    index: int
    files: list[dict]  # InputFile fields
    tokenizer: str  # tokenizer.json
    shard: str  # the shard file it writes
    folder: str  # where its result (and rejects) go
    text_field: str = "text"
    skip_bad_lines: bool = False
    min_chars: int = 1
    batch_docs: int = 1000
    eos: int = -1  # the id that ends each document (-1: the tokenizer's <|endoftext|>)

    @property
    def name(self) -> str:
        return f"{self.index:05d}"

    def result_path(self) -> Path:
        return Path(self.folder) / f"{self.name}.json"

    def rejects_path(self) -> Path:
        return Path(self.folder) / f"{self.name}.rejects.jsonl"


def plan_tasks(files: list[InputFile], n: int) -> list[list[InputFile]]:
    """Cut `files` (in reading order) into at most `n` contiguous parts of about equal bytes."""
    n = max(1, min(n, len(files)))
    cum = np.concatenate([[0], np.cumsum([f.size for f in files])])  # bytes before file i
    cuts = [0]
    for j in range(1, n):
        target = cum[-1] * j / n
        c = int(np.searchsorted(cum, target))  # first cut at or past the target...
        if c > 0 and target - cum[c - 1] < cum[c] - target:
            c -= 1  # ...or the one before it, whichever is nearer
        cuts.append(min(max(c, cuts[-1] + 1), len(files) - (n - j)))
    cuts.append(len(files))
    return [files[a:b] for a, b in zip(cuts, cuts[1:])]


def write_tasks(parts: list[list[InputFile]], folder: Path, shards: Path, tokenizer: Path,
                **options) -> list[Path]:  # fmt: skip
    """One task file per part; `options` are Task fields (text_field, min_chars, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, part in enumerate(parts):
        task = Task(k, [asdict(f) for f in part], str(tokenizer), str(shards / f"{k:05d}.bin"),
                    str(folder), **options)  # fmt: skip
        path = folder / f"{task.name}.task.json"
        _write_json(path, asdict(task))
        paths.append(path)
    return paths


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def read_task(path: Path) -> Task:
    return Task(**json.loads(Path(path).read_text(encoding="utf-8")))


def pending(task_paths: list[Path]) -> list[Path]:
    return [p for p in task_paths if not read_task(p).result_path().is_file()]


# ---------------------------------------------------------------- one task


def _documents(task: Task, rejects: sources.Rejects):
    for f in task.files:
        for doc in sources.iter_documents(Path(f["path"]), f["domain"], task.text_field,
                                          task.skip_bad_lines, rejects):  # fmt: skip
            if len(doc.text) >= task.min_chars:
                yield doc


def run_task(task_path: str | Path, bar: log.Bar | None = None) -> dict:
    """Encode one task's files into its shard and write its result; returns the result."""
    task = read_task(Path(task_path))
    # the published tokenizer as it is: a model's own one must gain no ids past its embedding
    tok = toklib.load_tokenizer_json(Path(task.tokenizer), add_missing=False)
    eos = task.eos if task.eos >= 0 else tok.token_to_id(toklib.DOC_SEP)
    task.rejects_path().unlink(missing_ok=True)  # a re-run starts the task over
    rejects = sources.Rejects(task.rejects_path() if task.skip_bad_lines else None)
    shard_tmp = Path(task.folder) / f"{task.name}.bin.tmp"  # outside the payload until done
    writer = tokens.ShardWriter(shard_tmp, tokens.dtype_for(tok.get_vocab_size()))
    domains: dict[str, int] = {}
    stats = {"bytes": 0, "documents": 0}
    try:
        _encode(tok, _documents(task, rejects), task.batch_docs, writer, eos, domains, stats, bar)
    finally:
        rejects.close()
    index = writer.close()
    Path(task.shard).parent.mkdir(parents=True, exist_ok=True)
    os.replace(shard_tmp, task.shard)
    np.save(Path(task.folder) / f"{task.name}.npy", index)
    result = {**stats, "tokens": int(index[:, 1].sum()), "domains": list(domains),
              "rejected_lines": rejects.count}  # fmt: skip
    _write_json(task.result_path(), result)
    return result


def _encode(tok, docs, batch_docs: int, writer, eos: int, domains, stats, bar) -> None:
    # Encoding runs in a thread (the Rust tokenizer releases the GIL and may use more
    # cores) while this thread parses the next batch of JSON.
    with ThreadPoolExecutor(1) as pool:
        pending_batch = None
        while True:
            batch = list(itertools.islice(docs, batch_docs))
            if pending_batch is not None:
                _write_batch(writer, *pending_batch.result(), eos, domains, stats, bar)
            if not batch:
                break
            pending_batch = pool.submit(_encode_batch, tok, batch)


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
    writer.add_many(flat, lengths, [domains.setdefault(d.domain, len(domains)) for d in batch])
    nbytes = sum(len(doc.text.encode("utf-8")) for doc in batch)
    stats["bytes"] += nbytes
    stats["documents"] += len(batch)
    if bar is not None:
        bar.advance(nbytes)


# ---------------------------------------------------------------- running the tasks


def _init_worker() -> None:
    log.set_quiet(True)


def run_local(task_paths: list[Path], workers: int) -> None:
    """Run the pending tasks, in this process when one runs at a time, else in processes."""
    todo = pending(task_paths)
    workers = min(workers or os.cpu_count() or 1, len(todo))
    total = sum(f["size"] for p in todo for f in read_task(p).files)
    with log.progress("tokenize", total=total) as bar:
        if workers <= 1:
            for path in todo:
                run_task(path, bar)
            return
        log.info(f"tokenizing {len(todo)} tasks in {workers} local processes")
        ctx = get_context("spawn")  # fork after torch or tokenizers started threads can hang
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
            futures = {pool.submit(run_task, str(p)): p for p in todo}
            for done, future in enumerate(as_completed(futures), 1):
                future.result()
                bar.advance(sum(f["size"] for f in read_task(futures[future]).files))
                bar.status(f"{done}/{len(todo)} tasks")


def run_slurm(task_paths: list[Path], cfg, folder: Path) -> None:
    """Run the pending tasks as one Slurm job array (`cfg` is a `slurm.ArrayConfig`)."""
    from llmforge import slurm

    todo = pending(task_paths)
    commands = slurm.module_commands("llmforge.data.shards", [str(p) for p in todo])
    missing = slurm.run_array("llmforge-tokenize", commands, len(todo), cfg, folder,
                              lambda: pending(task_paths))  # fmt: skip
    failures = [read_task(p).result_path().with_suffix(".error.json") for p in missing]
    for f in failures:
        if f.is_file():
            err = json.loads(f.read_text())
            raise (BadInput if err["exit_code"] == 2 else RunFailed)(err["message"])
    if missing:
        names = ", ".join(read_task(p).name for p in missing)
        raise RunFailed(f"Slurm tasks {names} ended without results (logs: {folder})")


# ---------------------------------------------------------------- merging


def _val_mask(domain_ids: np.ndarray, n_domains: int, rng, fraction: float, min_docs: int):
    """Held-out documents per domain: `fraction` of each (at least `min_docs`, never all)."""
    val = []
    for d in range(n_domains):
        ids = np.flatnonzero(domain_ids == d)
        n_val = max(min_docs, round(fraction * len(ids))) if fraction else 0
        n_val = min(n_val, max(len(ids) - 1, 0))
        val.extend(rng.permutation(ids)[:n_val].tolist())
    mask = np.zeros(len(domain_ids), dtype=bool)
    mask[val] = True
    return mask


def merge(task_paths: list[Path], root: Path, seed: int, val_fraction: float,
          val_min_docs: int) -> tuple[list[str], dict]:  # fmt: skip
    """Write each split's shuffled index over the tasks' shards; (domains, per-split counts)."""
    domains: dict[str, int] = {}
    parts, shards = [], []
    for k, path in enumerate(task_paths):
        task = read_task(path)
        result = json.loads(task.result_path().read_text())
        local = np.load(Path(task.folder) / f"{task.name}.npy")
        remap = np.array([domains.setdefault(d, len(domains)) for d in result["domains"]] or [0])
        rows = np.empty((len(local), 4), dtype=np.int64)
        rows[:, 0], rows[:, 1:3], rows[:, 3] = k, local[:, :2], remap[local[:, 2]]
        parts.append(rows)
        shards.append(str(Path(task.shard).relative_to(root)))
    index = np.concatenate(parts)
    if len(index) == 0:
        raise BadInput("the inputs hold no documents")
    rng = np.random.default_rng(seed)
    is_val = _val_mask(index[:, 3], len(domains), rng, val_fraction, val_min_docs)
    counts = {}
    for split, mask in (("train", ~is_val), ("val", is_val)):
        order = rng.permutation(np.flatnonzero(mask))
        counts[split] = {**tokens.write_index(root, split, index[order]), "shards": shards}
    return list(domains), counts


def merged_rejects(task_paths: list[Path], out: Path) -> None:
    """Concatenate the tasks' rejected lines into `out`, in task order (none: no file)."""
    found = [read_task(p).rejects_path() for p in task_paths]
    found = [f for f in found if f.is_file()]
    if found:
        with open(out, "wb") as fh:
            for f in found:
                fh.write(f.read_bytes())


def main(argv: list[str]) -> int:
    """`python -m llmforge.data.shards TASK.json ...`: run each pending task (Slurm arrays)."""
    if not argv:
        print("usage: python -m llmforge.data.shards TASK.json [TASK.json ...]", file=sys.stderr)
        return 2
    log.set_quiet(True)
    for path in pending([Path(a) for a in argv]):
        try:
            run_task(path)
        except LLMForgeError as e:  # leave the reason for the stage that waits on us
            error = {"message": str(e), "exit_code": e.exit_code}
            _write_json(read_task(path).result_path().with_suffix(".error.json"), error)
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
