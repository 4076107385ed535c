"""Content hashes of outside inputs: remembered per file, never trusted once the file's
size, mtime or ctime moved, computed on several threads, cached outside the input."""

import hashlib
import json
import os
import time

import pytest

from llmforge import filehash


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "hashes.json"
    monkeypatch.setenv("LLMFORGE_HASH_CACHE", str(path))
    monkeypatch.setattr(filehash, "RACY_SECONDS", 0.0)  # files written just now may be cached
    return path


@pytest.fixture
def reads(monkeypatch):
    """The files actually read by the hasher, in order."""
    seen = []
    real = filehash.sha256_file

    def counting(path, on_bytes=None):
        seen.append(path.name)
        return real(path, on_bytes)

    monkeypatch.setattr(filehash, "sha256_file", counting)
    return seen


def make_checkpoint(root):
    root.mkdir()
    for name, size in (
        ("config.json", 10),
        ("model-1.safetensors", 5000),
        ("model-2.safetensors", 7000),
    ):
        (root / name).write_bytes(os.urandom(size))
    (root / ".cache" / "huggingface").mkdir(parents=True)
    (root / ".cache" / "huggingface" / "download.lock").write_text("changes every download")
    return root


def test_tree_hash_covers_names_and_bytes_but_not_hidden_folders(tmp_path, cache):
    ckpt = make_checkpoint(tmp_path / "ckpt")
    first = filehash.tree_hash(ckpt)
    h = hashlib.sha256()
    for f in ("config.json", "model-1.safetensors", "model-2.safetensors"):
        digest = hashlib.sha256((ckpt / f).read_bytes()).hexdigest()
        h.update(f"{f}\0{digest}\n".encode())
    assert first == h.hexdigest()
    (ckpt / ".cache" / "huggingface" / "download.lock").write_text("another download")
    assert filehash.tree_hash(ckpt) == first
    (ckpt / "model-2.safetensors").rename(ckpt / "model-3.safetensors")
    assert filehash.tree_hash(ckpt) != first


def test_unchanged_files_are_not_read_again(tmp_path, cache, reads):
    ckpt = make_checkpoint(tmp_path / "ckpt")
    first = filehash.tree_hash(ckpt)
    assert sorted(reads) == ["config.json", "model-1.safetensors", "model-2.safetensors"]
    reads.clear()
    assert filehash.tree_hash(ckpt) == first and reads == []
    assert not any("hash" in f.name for f in ckpt.iterdir())  # nothing written into the input
    entries = json.loads(cache.read_text())["files"]
    assert str((ckpt / "config.json").resolve()) in entries


def test_a_rewrite_with_the_old_size_and_mtime_is_still_rehashed(tmp_path, cache, reads):
    ckpt = make_checkpoint(tmp_path / "ckpt")
    first = filehash.tree_hash(ckpt)
    shard = ckpt / "model-1.safetensors"
    before = shard.stat()
    shard.write_bytes(os.urandom(before.st_size))  # same size ...
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))  # ... and mtime put back
    reads.clear()
    assert filehash.tree_hash(ckpt) != first  # ctime moved, so the entry is not trusted
    assert reads == ["model-1.safetensors"]


def test_size_or_mtime_changes_force_a_rehash(tmp_path, cache, reads):
    f = tmp_path / "data.jsonl"
    f.write_text('{"a": 1}\n')
    filehash.tree_hash(f)
    reads.clear()
    os.utime(f, ns=(time.time_ns(), f.stat().st_mtime_ns + 10**9))
    filehash.tree_hash(f)
    f.write_text('{"a": 1}\n{"b": 2}\n')
    filehash.tree_hash(f)
    assert reads == ["data.jsonl", "data.jsonl"]


def test_a_file_written_this_very_moment_is_not_remembered(tmp_path, cache, monkeypatch, reads):
    monkeypatch.setattr(filehash, "RACY_SECONDS", 2.0)
    f = tmp_path / "fresh.jsonl"
    f.write_text("{}\n")
    filehash.tree_hash(f)
    filehash.tree_hash(f)
    assert reads == ["fresh.jsonl", "fresh.jsonl"]  # its mtime tick may still be open


def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path, cache):
    f = tmp_path / "x.txt"
    f.write_text("x")
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    assert filehash.tree_hash(f) == hashlib.sha256(b"x").hexdigest()
    assert json.loads(cache.read_text())["version"] == filehash.CACHE_VERSION


def test_threads_give_the_same_hashes(tmp_path, cache):
    ckpt = make_checkpoint(tmp_path / "ckpt")
    files = filehash.payload_files(ckpt)
    assert filehash._hash_many(files, threads=4) == filehash._hash_many(files, threads=1)


def test_default_cache_location_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("LLMFORGE_HASH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert filehash.cache_path() == tmp_path / "llmforge" / "file-hashes.json"
