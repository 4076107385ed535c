"""Where an artifact's code came from: the llmforge source hash, git state and host.

The manifest's `code` and `host` fields are built here. `source_hash` is a hash of our own
Python source, recorded in every manifest; at a cache hit made by other code `code_drift`
says so, and `LLMFORGE_CODE_IN_ID=1` makes the hash part of new ids (docs/artifacts.md).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import llmforge
from llmforge.errors import BadInput

SOURCE_PACKAGES = ("llmforge", "stages")
CODE_IN_ID_ENV = "LLMFORGE_CODE_IN_ID"  # 1: ids hash the source too (docs/artifacts.md)


def hash_sources(packages: dict[str, Path]) -> str:
    """sha256 over the .py files under each package directory: the path (package name
    first) and the sha256 of each file, in name order."""
    h = hashlib.sha256()
    for name, root in packages.items():
        for f in sorted(Path(root).rglob("*.py")):
            rel = f"{name}/{f.relative_to(root).as_posix()}"
            h.update(rel.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


@functools.cache
def source_hash() -> str:
    """`hash_sources` of the llmforge and stages packages this process imports from,
    computed once per process (about 150 files, under 10 ms). It covers our code only: not
    torch, transformers or other dependencies (the manifest's `host` records the versions
    of python and torch), not recipes or data files."""
    packages = {}
    for name in SOURCE_PACKAGES:
        spec = importlib.util.find_spec(name)  # finds the package without importing it
        for root in (spec and spec.submodule_search_locations) or []:
            packages[name] = Path(root)
    return hash_sources(packages)


def code_in_id() -> bool:
    """Whether `LLMFORGE_CODE_IN_ID` asks for the source hash to be part of new ids."""
    raw = os.environ.get(CODE_IN_ID_ENV, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise BadInput(f"environment variable {CODE_IN_ID_ENV}={raw!r}: must be 1 or 0")


def id_source() -> str | None:
    """The `source` argument of `compute_id` for a new artifact: the hash, or None."""
    return source_hash() if code_in_id() else None


def code_drift(manifest: dict) -> str | None:
    """A warning when the artifact was made by other llmforge source than this process runs
    (None when the same, or when the manifest predates `code.source_hash`)."""
    recorded = (manifest.get("code") or {}).get("source_hash")
    if recorded is None or recorded == source_hash():
        return None
    return (
        f"cache hit on an artifact built by other llmforge code (source {recorded[:12]}, "
        f"this one {source_hash()[:12]}), reused as it is; re-run with --replace to rebuild "
        f"it with this code, or set {CODE_IN_ID_ENV}=1 to give changed code new ids"
    )


def code_info(in_id: bool = False) -> dict:
    """version, git commit and dirty flag, the source hash, and whether the id includes it."""
    repo = Path(__file__).resolve().parent.parent
    info: dict[str, Any] = {"version": llmforge.__version__, "commit": None, "dirty": None,
                            "source_hash": source_hash(), "in_id": in_id}  # fmt: skip
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", "-C", str(repo), *a], capture_output=True, text=True, timeout=5
        )
        head = run("rev-parse", "HEAD")
        if head.returncode == 0:
            info["commit"] = head.stdout.strip()
            status = run("status", "--porcelain", "--untracked-files=no")
            info["dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def host_info() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "hostname": platform.node(),
    }
