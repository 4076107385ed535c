"""Benchmark: the content id of an outside checkpoint, cold, on one thread, and from the cache.

    .venv/bin/python bench/hash_bench.py [--shards 4] [--mb 256]

Writes a stand-in checkpoint of `--shards` random files of `--mb` MB each into a temp
folder, then times `llmforge.filehash.tree_hash`: with an empty cache on the default thread
pool, with an empty cache on one thread, and again with the cache filled (what every command
after the first one pays). The baseline is `sha256sum` over the same files, one process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--mb", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ckpt"
        root.mkdir()
        for i in range(args.shards):
            (root / f"model-{i:05d}.safetensors").write_bytes(os.urandom(args.mb << 20))
        time.sleep(2.5)  # past filehash.RACY_SECONDS, so the files may be remembered
        os.environ["LLMFORGE_HASH_CACHE"] = str(Path(tmp) / "cache.json")
        from llmforge import filehash

        files = filehash.payload_files(root)
        gb = args.shards * args.mb / 1024
        pool = timed(lambda: filehash._hash_many(files, None))
        one = timed(lambda: filehash._hash_many(files, 1))
        cold = timed(lambda: filehash.tree_hash(root))
        warm = timed(lambda: filehash.tree_hash(root))
        shell = timed(lambda: subprocess.run(["sha256sum", *map(str, files)], check=True,
                                             capture_output=True))  # fmt: skip
    print(f"{gb:.2f} GiB in {args.shards} files ({os.cpu_count()} cores)")
    print(f"  thread pool: {pool:.2f} s ({gb / pool:.2f} GiB/s); one thread: {one:.2f} s")
    print(f"  tree_hash, empty cache: {cold:.2f} s; cached: {warm * 1e3:.1f} ms")
    print(f"  sha256sum baseline: {shell:.2f} s; ratio {shell / pool:.2f}x")


if __name__ == "__main__":
    main()
