"""The artifact store: manifests, deterministic ids, hashing, atomic publish, verify, lineage.

An artifact is a directory holding `manifest.json` and its payload. A stage writes into a
sibling `OUT.partial/` directory, holds `OUT.lock` while it works, and publishes by writing
the manifest last and renaming the directory into place. See docs/artifacts.md.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import llmforge
from llmforge import filehash, log, outside, provenance
from llmforge.errors import BadInput
from llmforge.filehash import sha256_file

SCHEMA = 1
KINDS = ("corpus", "tokenizer", "tokens", "mixture", "model", "eval")
MANIFEST = "manifest.json"
WORK_DIR = "_work"
RUN_STATE = "_run.json"  # inside the partial dir: which id this partial belongs to


# ---------------------------------------------------------------- hashing and ids


def hash_files(paths: list[Path], workers: int = 0) -> list[str]:
    """sha256 of each file, several files at a time (0 workers = one per core).

    hashlib releases the GIL while it hashes a large buffer, so threads keep every core
    busy; one file still hashes on one core, since sha256 is sequential.
    """
    workers = min(workers or os.cpu_count() or 1, len(paths))
    if workers <= 1:
        return [sha256_file(p) for p in paths]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(sha256_file, paths))


def hash_tree(path: Path) -> str:
    """Content hash of a raw input file or directory (names and bytes of every file)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


def compute_id(
    stage: str,
    config: dict,
    inputs: Iterable[tuple[str, str]],
    version: str | None = None,
    source: str | None = None,
) -> str:
    """Deterministic artifact id from (stage, resolved config, input ids, llmforge version),
    and the source hash when `source` is given (`LLMFORGE_CODE_IN_ID=1`, see `id_source`).

    `version` defaults to this llmforge's; `id_problem` passes the one a manifest recorded.
    """
    fields = {
        "stage": stage,
        "config": config,
        "inputs": sorted([list(pair) for pair in inputs]),
        "version": llmforge.__version__ if version is None else version,
    }
    if source is not None:
        fields["source"] = source
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def content_hash(files: dict) -> str:
    """Hash of a manifest's file table: part of a nested artifact's id (`write_nested`)."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def id_problem(manifest: dict) -> str | None:
    """Why the manifest's id does not follow from what it records (None when it does).

    The id is recomputed from the recorded stage, config, input (role, id) pairs and
    llmforge version (plus the file table for an artifact nested in another run, and the
    source hash when `code.in_id` says the id was made with it), so a manifest whose
    config, inputs, stage, version or source hash was edited by hand no longer matches.
    """
    try:
        stage, config = manifest["stage"], manifest["config"]
        pairs = [(i["role"], i["id"]) for i in manifest["inputs"]]
        code = manifest["code"]
        version = code["version"]
        source = code["source_hash"] if code.get("in_id") else None
        nested = {**config, "_content": content_hash(manifest["files"])}
        expected = [compute_id(stage, c, pairs, version, source) for c in (config, nested)]
    except (KeyError, TypeError, ValueError) as e:
        return f"the manifest lacks what its id is computed from ({type(e).__name__}: {e})"
    if manifest["id"] in expected:
        return None
    parts = ["stage", "config", "inputs", "version", *(["source hash"] if source else [])]
    return (
        f"id {manifest['id']} does not match the manifest's {', '.join(parts[:-1])} and "
        f"{parts[-1]} (they give {expected[0]}): the manifest was edited"
    )


# ---------------------------------------------------------------- references to inputs


@dataclass
class Ref:
    """An input to a stage: a published artifact, or a raw file/directory (kind "raw")."""

    path: Path
    kind: str
    id: str
    role: str = ""
    manifest: dict | None = None
    outside: dict | None = None  # {"detected", "sha256"} of an input llmforge did not write

    @property
    def metrics(self) -> dict:
        return (self.manifest or {}).get("metrics", {})

    def record(self) -> dict:
        """This input as the manifest's `inputs` list records it."""
        entry = {"role": self.role, "path": str(self.path), "id": self.id, "kind": self.kind}
        return {**entry, "outside": self.outside} if self.outside else entry


def read_manifest(path: str | Path) -> dict:
    """The manifest of the artifact at `path`; BadInput if it is not a complete artifact."""
    path = Path(path)
    mf = path / MANIFEST
    if not path.exists():
        raise BadInput("no such file or directory", path=str(path))
    if not mf.is_file():
        hint = (
            " (an unfinished run: re-run its stage to resume)"
            if path.name.endswith(".partial")
            else ""
        )
        raise BadInput(f"not an artifact: no {MANIFEST}{hint}", path=str(path))
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"corrupt manifest: {e}", path=str(mf)) from None
    for key in ("kind", "id", "files", "schema"):
        if key not in manifest:
            raise BadInput(f"manifest lacks '{key}'", path=str(mf))
    return manifest


def open_artifact(path: str | Path, kinds: Iterable[str] | None = None, role: str = "") -> Ref:
    """Open a published artifact, checking its id, its kind and that every payload file is
    there with its recorded size (`verify` rehashes the bytes too)."""
    path = Path(path)
    manifest = read_manifest(path)
    if problem := id_problem(manifest):
        raise BadInput(f"forged or corrupt manifest: {problem}", path=str(path / MANIFEST))
    kinds = tuple(kinds or ())
    if kinds and manifest["kind"] not in kinds:
        want = " or ".join(kinds)
        raise BadInput(f"is a '{manifest['kind']}' artifact, expected {want}", path=str(path))
    for rel, info in manifest["files"].items():
        f = path / rel
        if not f.is_file():
            raise BadInput(f"incomplete artifact: missing payload file {rel}", path=str(path))
        if f.stat().st_size != info["size"]:
            raise BadInput(f"corrupt artifact: {rel} has the wrong size", path=str(path))
    return Ref(
        path=path.resolve(), kind=manifest["kind"], id=manifest["id"], role=role, manifest=manifest
    )


def open_input(path: str | Path, kinds: Iterable[str], role: str = "") -> Ref:
    """Open an input: a published artifact, or (for model, tokenizer and raw roles) a plain
    file or directory llmforge did not write."""
    path = Path(path)
    kinds = tuple(kinds)
    unfinished = path.name.endswith(".partial")
    if (path / MANIFEST).is_file() or unfinished or not set(kinds) & set(outside.OUTSIDE_KINDS):
        return open_artifact(path, [k for k in kinds if k != "raw"], role)
    return open_outside(path, kinds, role)


def open_outside(path: str | Path, kinds: Iterable[str], role: str = "") -> Ref:
    """An outside input: its kind detected from its files, its id a hash of their bytes."""
    path = Path(path)
    found = outside.detect(path, tuple(kinds))
    digest = filehash.tree_hash(path)
    return Ref(
        path=path.resolve(), kind=found.kind, id=outside_id(digest), role=role,
        outside={"detected": found.detail, "sha256": digest},
    )  # fmt: skip


def outside_id(digest: str) -> str:
    return "ext-" + digest[:20]


# ---------------------------------------------------------------- verify


def verify(path: str | Path) -> list[str]:
    """Check the manifest against its id and rehash every payload file; return a list of
    problems (empty means intact)."""
    path = Path(path)
    manifest = read_manifest(path)
    problems = [f"{MANIFEST}: {p}" for p in [id_problem(manifest)] if p]
    to_hash = []
    for rel, info in sorted(manifest["files"].items()):
        f = path / rel
        if not f.is_file():
            problems.append(f"{rel}: missing")
        elif f.stat().st_size != info["size"]:
            problems.append(f"{rel}: size {f.stat().st_size} != {info['size']}")
        else:
            to_hash.append(rel)
    digests = hash_files([path / rel for rel in to_hash])
    problems += [
        f"{rel}: sha256 mismatch"
        for rel, digest in zip(to_hash, digests)
        if digest != manifest["files"][rel]["sha256"]
    ]
    listed = set(manifest["files"]) | {MANIFEST}
    for f in path.rglob("*"):
        if f.is_file() and str(f.relative_to(path)) not in listed and not _nested_artifact(path, f):
            problems.append(f"{f.relative_to(path)}: not listed in the manifest")
    return problems


def _nested_artifact(root: Path, f: Path) -> bool:
    return any((p / MANIFEST).is_file() for p in f.parents if p != root and root in p.parents)


# ---------------------------------------------------------------- payload files


def file_table(root: Path) -> dict[str, dict]:
    """sha256 and size of every payload file under `root` (nested artifacts included)."""
    files = []
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(f.relative_to(root))
        if not (rel == MANIFEST or rel.startswith(WORK_DIR + "/") or rel == RUN_STATE):
            files.append((rel, f))
    digests = hash_files([f for _, f in files])
    return {
        rel: {"sha256": digest, "size": f.stat().st_size}
        for (rel, f), digest in zip(files, digests)
    }


# ---------------------------------------------------------------- the run being written


@dataclass
class Run:
    """An output artifact being written into `OUT.partial/`; published by `commit()`."""

    path: Path
    id: str
    kind: str
    stage: str
    config: dict
    inputs: list[Ref]
    rank: int = 0
    world_size: int = 1
    resumed: bool = False
    code_in_id: bool = False  # the id hashes the source too (LLMFORGE_CODE_IN_ID)
    started: float = field(default_factory=time.time)
    _lock_fd: int | None = None

    @property
    def dir(self) -> Path:
        return self.path.with_name(self.path.name + ".partial")

    @property
    def work(self) -> Path:
        w = self.dir / WORK_DIR
        w.mkdir(parents=True, exist_ok=True)
        return w

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def log_metrics(self, record: dict) -> None:
        if not self.is_main:
            return
        with open(self.dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def manifest(self, metrics: dict) -> dict:
        return {
            "schema": SCHEMA,
            "kind": self.kind,
            "stage": self.stage,
            "id": self.id,
            "inputs": [r.record() for r in self.inputs],
            "config": self.config,
            "files": file_table(self.dir),
            "metrics": metrics,
            "code": provenance.code_info(self.code_in_id),
            "host": provenance.host_info(),
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - self.started, 3),
        }

    def commit(self, metrics: dict, replace: bool = False) -> None:
        """Hash the payload, write the manifest last, and rename into place atomically."""
        shutil.rmtree(self.dir / WORK_DIR, ignore_errors=True)
        (self.dir / RUN_STATE).unlink(missing_ok=True)
        manifest = self.manifest(metrics)
        tmp = self.dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
        _fsync(tmp)
        os.replace(tmp, self.dir / MANIFEST)
        if self.path.exists():
            if not replace:
                raise BadInput("output appeared during the run", path=str(self.path))
            old = self.path.with_name(self.path.name + f".old-{os.getpid()}")
            os.replace(self.path, old)
            os.replace(self.dir, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.dir, self.path)
        _fsync_dir(self.path.parent)

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def release(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:  # some filesystems refuse fsync on directories; the rename still holds
        pass


def lock_path(out: Path) -> Path:
    return out.with_name(out.name + ".lock")


def acquire_lock(out: Path) -> int:
    """Take the exclusive lock on an output path; BadInput if another run holds it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(out), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BadInput("another run is writing this output (lock held)", path=str(out)) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def existing_id(out: Path) -> str | None:
    """The id of the artifact already published at `out`, if any."""
    if (out / MANIFEST).is_file():
        return read_manifest(out)["id"]
    if out.exists():
        raise BadInput("output path exists and is not an artifact", path=str(out))
    return None


def prepare_partial(run: Run, replace: bool) -> None:
    """Create or reuse `OUT.partial/`; a partial from a different config is an error."""
    state_file = run.dir / RUN_STATE
    if run.dir.exists():
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
        if state.get("id") == run.id:
            run.resumed = True
            if state.get("source_hash", provenance.source_hash()) != provenance.source_hash():
                log.warn(
                    f"{run.dir}: resuming a run that other llmforge code started (source "
                    f"{state['source_hash'][:12]}, now {provenance.source_hash()[:12]}): the result mixes "
                    f"both; pass --replace to start over, or set {provenance.CODE_IN_ID_ENV}=1"
                )
            return
        if not replace:
            raise BadInput(
                f"a partial run with a different id ({state.get('id')}) exists; "
                "pass --replace to discard it",
                path=str(run.dir),
            )
        shutil.rmtree(run.dir)
    run.dir.mkdir(parents=True)
    state_file.write_text(
        json.dumps({"id": run.id, "stage": run.stage, "source_hash": provenance.source_hash()})
    )


# ---------------------------------------------------------------- lineage and listing


def lineage(path: str | Path, seen: set | None = None) -> dict:
    """The tree of inputs back to raw data: {"path", "kind", "id", "stage", "inputs": [...]}."""
    path = Path(path)
    seen = seen if seen is not None else set()
    try:
        manifest = read_manifest(path)
    except BadInput as e:
        return {
            "path": str(path),
            "kind": "missing",
            "id": "?",
            "stage": "",
            "error": str(e),
            "inputs": [],
        }
    node = {
        "path": str(path),
        "kind": manifest["kind"],
        "id": manifest["id"],
        "stage": manifest.get("stage", ""),
        "inputs": [],
    }
    if manifest["id"] in seen:
        return node
    seen.add(manifest["id"])
    for inp in manifest.get("inputs", []):
        if inp.get("outside") or inp.get("kind") == "raw":
            node["inputs"].append(outside_node(inp))
        else:
            child = lineage(inp["path"], seen)
            child["role"] = inp["role"]
            if child["kind"] != "missing" and child["id"] != inp["id"]:
                child["error"] = f"id changed: manifest recorded {inp['id']}"
            node["inputs"].append(child)
    return node


def outside_node(inp: dict) -> dict:
    """A lineage leaf for an outside input, flagged when its bytes changed or it is gone."""
    node = {"path": inp["path"], "kind": inp["kind"], "id": inp["id"], "stage": "",
            "role": inp.get("role", ""), "outside": inp.get("outside"), "inputs": []}  # fmt: skip
    recorded = (inp.get("outside") or {}).get("sha256")
    if recorded is None:  # written before outside inputs were hashed by llmforge.filehash
        return node
    if not Path(inp["path"]).exists():
        node["error"] = "gone: the path no longer exists"
    elif filehash.tree_hash(Path(inp["path"])) != recorded:
        node["error"] = "changed: its content no longer hashes to the recorded id"
    return node


def find_artifacts(root: str | Path) -> list[tuple[Path, dict]]:
    """Every published artifact under `root` (not descending into artifacts)."""
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if MANIFEST in filenames and not dirpath.endswith(".partial"):
            try:
                found.append((Path(dirpath), read_manifest(dirpath)))
            except BadInput:
                continue
            dirnames[:] = []
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.endswith(".partial"))
    return found


def write_nested(
    root: Path, kind: str, stage: str, config: dict, inputs: list[Ref], metrics: dict
) -> str:
    """Give a payload sub-directory its own manifest, so it is an artifact of its own.

    Its id hashes the content as well as the config, since it is made inside another run.
    """
    files = file_table(root)
    content = content_hash(files)
    source = provenance.id_source()
    pairs = [(r.role, r.id) for r in inputs]
    art_id = compute_id(stage, {**config, "_content": content}, pairs, source=source)
    manifest = {
        "schema": SCHEMA,
        "kind": kind,
        "stage": stage,
        "id": art_id,
        "inputs": [r.record() for r in inputs],
        "config": config,
        "files": files,
        "metrics": metrics,
        "code": provenance.code_info(source is not None),
        "host": provenance.host_info(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": 0.0,
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    return art_id
