"""Content hashes of outside inputs, remembered per file so big checkpoints hash once.

An outside input (a checkpoint, tokenizer or data file llmforge did not write) has no
manifest, so its id is a hash of its bytes. Rehashing a 16 GB checkpoint on every command
would cost minutes, so each file's sha256 is remembered in a per-user cache keyed by its
real path and trusted only while the file's size, mtime_ns, ctime_ns, inode and device are
all unchanged. ctime cannot be set back from user space (unlike mtime with `touch -d`),
so a file rewritten in place is always rehashed; a file modified within the same clock
tick as its hashing is never cached at all (git's "racily clean" problem).

The cache lives in `$LLMFORGE_HASH_CACHE`, else `$XDG_CACHE_HOME/llmforge/file-hashes.json`,
else `~/.cache/llmforge/file-hashes.json`, never beside the input: a model directory may
be read-only, shared with other users (who could then plant entries) or hashed itself, and
a file written into it would change the very content being identified. Writes are atomic
(temp file + rename); a corrupt or unreadable cache is ignored and rebuilt. An exclusive
lock beside it makes concurrent processes (the ranks of one torchrun) wait for the first
one's hashes instead of all reading the same 16 GB.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from llmforge import log

CACHE_VERSION = 1
RACY_SECONDS = 2.0  # files modified this recently are hashed but not remembered
PROGRESS_BYTES = 256 << 20  # show a progress bar when this much must be hashed
CHUNK = 1 << 20


def cache_path() -> Path:
    """Where the per-user hash cache lives (see the module docstring)."""
    if os.environ.get("LLMFORGE_HASH_CACHE"):
        return Path(os.environ["LLMFORGE_HASH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmforge" / "file-hashes.json"


def payload_files(path: Path) -> list[Path]:
    """The files whose bytes identify `path`: the file itself, or every file under the
    directory except those in hidden folders (`.git/`, the `.cache/` of a hub download)."""
    path = Path(path)
    if path.is_file():
        return [path]
    files = []
    for f in path.rglob("*"):
        rel = f.relative_to(path).parts
        if f.is_file() and not any(part.startswith(".") for part in rel[:-1]):
            files.append(f)
    return sorted(files)


def tree_hash(path: Path, threads: int | None = None) -> str:
    """sha256 of a file, or of (relative name, sha256) of every payload file of a directory."""
    path = Path(path)
    files = payload_files(path)
    digests = file_hashes(files, threads)
    if path.is_file():
        return digests[path]
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + digests[f].encode() + b"\n")
    return h.hexdigest()


def file_hashes(files: list[Path], threads: int | None = None) -> dict[Path, str]:
    """sha256 of each file, from the cache where its stat still matches, else computed."""
    stats = {f: _stat_key(f) for f in files}
    with _locked():
        cache = _read_cache()
        known = {f: cache[k[0]]["sha256"] for f, k in stats.items() if _fresh(cache, k)}
        todo = [f for f in files if f not in known]
        if todo:
            known.update(_hash_many(todo, threads))
            _remember(cache, {f: (stats[f], known[f]) for f in todo})
    return known


def _stat_key(f: Path) -> tuple[str, dict]:
    st = os.stat(f)
    return os.path.realpath(f), {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "ino": st.st_ino,
        "dev": st.st_dev,
    }


def _fresh(cache: dict, key: tuple[str, dict]) -> bool:
    entry = cache.get(key[0])
    return entry is not None and all(entry.get(k) == v for k, v in key[1].items())


def _hash_many(files: list[Path], threads: int | None) -> dict[Path, str]:
    """sha256 of many files on a thread pool: hashlib releases the GIL on large blocks, so
    the shards of a checkpoint hash in parallel. A progress bar (in MB) shows for big inputs."""
    total = sum(f.stat().st_size for f in files)
    workers = max(1, min(threads or os.cpu_count() or 1, len(files), 8))
    with ThreadPoolExecutor(workers) as pool:
        if total < PROGRESS_BYTES:
            return dict(zip(files, pool.map(sha256_file, files)))
        with log.progress("hashing inputs (MB)", total=round(total / 1e6)) as bar:
            on_bytes = lambda n: bar.advance(n / 1e6)  # noqa: E731
            return dict(zip(files, pool.map(lambda f: sha256_file(f, on_bytes), files)))


def sha256_file(path: Path, on_bytes=None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
            if on_bytes is not None:
                on_bytes(len(block))
    return h.hexdigest()


def _remember(cache: dict, new: dict[Path, tuple[tuple[str, dict], str]]) -> None:
    """Add entries, skipping racily fresh files and files that changed while they were
    read; drop entries whose file is gone; save."""
    now_ns = time.time_ns()
    for f, ((real, stat), digest) in new.items():
        settled = now_ns - stat["mtime_ns"] > RACY_SECONDS * 1e9
        if settled and os.path.exists(f) and _stat_key(f)[1] == stat:
            cache[real] = {**stat, "sha256": digest}
    cache = {p: e for p, e in cache.items() if os.path.exists(p)}
    _write_cache(cache)


def _read_cache() -> dict:
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    entries = data.get("files")
    return entries if isinstance(entries, dict) else {}


def _write_cache(entries: dict) -> None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": CACHE_VERSION, "files": entries}, f)
        os.replace(tmp, path)
    except OSError as e:  # a read-only home only costs a rehash next time
        log.warn(f"could not save the hash cache {path}: {e}")


@contextmanager
def _locked() -> Iterator[None]:
    """Hold the cache's lock file, or carry on without it where locks are unavailable."""
    fd = None
    try:
        lock = cache_path().with_name(cache_path().name + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        pass
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)
