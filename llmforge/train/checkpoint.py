"""Training checkpoints: sharded with torch.distributed.checkpoint (DCP), atomic, optionally
asynchronous, loaded without unpickling code.

A checkpoint is a directory `ckpt-{step:08d}/` in the run's work directory:

    shards/        DCP: each rank writes its own shards of the model and optimizer tensors
                   (`__{rank}_0.distcp`); the coordinator (rank 0) writes `.metadata` last
    state.json     step, world size, scheduler states, optimizer param groups, the global
                   data position and callback state (plain JSON, written by rank 0)
    rank{r}.json   rank r's RNG: torch CPU and CUDA (every device), base64

**Atomic.** Everything goes into `ckpt-{step}.tmp/`. DCP's save returns on the coordinator
only after every rank reported its writes, so rank 0 then renames the directory into place
and a barrier lets every rank see it. A directory without `.tmp` is complete; a `.tmp` or
an incomplete directory left by a crash is ignored and removed by the next run (`clean_stale`).

**Asynchronous** (`asynchronous=True`): `dcp.async_save` stages a CPU copy of the state and
writes it in a background thread on a gloo group of its own (so it never shares a process
group with the training collectives); our own thread then renames. Training goes on at
once; at most one save is in flight, and the next save, a rewind, the end of the run and a
preemption wait for it. The price is one CPU copy of this rank's shard of the state.

**No pickled code.** DCP's `.metadata` is a pickle. `SafeReader` reads it with an allow-list
unpickler (DCP's metadata dataclasses, `torch.Size`, dtypes, layouts, paths) and refuses any
other global, so a crafted checkpoint cannot run code. DCP reads tensor payloads with
`torch.load(weights_only=True)`; it would read a non-tensor value with
`torch.load(weights_only=False)`, so we never save one (they go to the JSON files) and
`SafeReader` refuses a checkpoint that holds one.

**Resharding.** DCP loads the shards into whatever layout the model has now (FSDP2 over any
number of ranks, or a plain model), so a run saved on 2 ranks resumes on 1 or 4.
`model_weights` reads only the model's entries, in one process, without collectives and
without the optimizer: that is how the published model is exported.

**Format 1** (one `state.pt` of full state dicts from rank 0, and `rank{r}.json`) still
loads, so partial runs from before keep resuming.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import shutil
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta, TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from llmforge import distributed, log
from llmforge.errors import BadInput, RunFailed

PATTERN = re.compile(r"^ckpt-(\d{8})$")
TMP = ".tmp"
SHARDS = "shards"
STATE = "state.json"
LEGACY = "state.pt"  # format 1
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


_rank = distributed.get_rank


@contextmanager
def _collective(what: str):
    """Turn a collective that timed out or lost its peers into a RunFailed that says so."""
    try:
        with warnings.catch_warnings():
            # DCP warns on every single-process save or load (how we run without torchrun)
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            yield
    except (RuntimeError, dcp.api.CheckpointException) as e:
        if not dist.is_initialized():
            raise
        raise RunFailed(
            f"{what}: rank {_rank()} lost its peers or waited past the collective timeout "
            f"({type(e).__name__}: {str(e)[:300]}). Stopping so the output lock is released; "
            "re-run the same command to resume from the last complete checkpoint"
        ) from e


def _barrier(what: str, group=None) -> None:
    with _collective(what):
        distributed.barrier(group)


# ---------------------------------------------------------------- finding checkpoints


def is_complete(path: Path) -> bool:
    """Format 2 needs its state and DCP's metadata (written last); format 1 its state.pt."""
    path = Path(path)
    format2 = (path / STATE).is_file() and (path / SHARDS / ".metadata").is_file()
    return format2 or (path / LEGACY).is_file()


def checkpoints(work: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in `work`, oldest first."""
    found = [
        (int(m.group(1)), p)
        for p in Path(work).glob("ckpt-*")
        if (m := PATTERN.match(p.name)) and is_complete(p)
    ]
    return sorted(found)


def latest(work: Path) -> Path | None:
    found = checkpoints(work)
    return found[-1][1] if found else None


def clean_stale(work: Path) -> list[Path]:
    """Remove what a crashed run left: `.tmp` directories and incomplete checkpoints."""
    stale = [
        p
        for p in Path(work).glob("ckpt-*")
        if p.is_dir() and (p.name.endswith(TMP) or (PATTERN.match(p.name) and not is_complete(p)))
    ]
    for p in stale:
        log.warn(f"removing {p.name}, left unfinished by an earlier run")
        shutil.rmtree(p, ignore_errors=True)
    return stale


# ---------------------------------------------------------------- RNG


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def rng_state() -> dict:
    """This process's torch RNG: the CPU generator and, once CUDA is in use, every device's."""
    state = {"cpu": _b64(torch.get_rng_state())}
    if torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    """Restore `rng_state()`; the CUDA part when this process uses CUDA (the engine moves the
    model to its device before it resumes)."""
    torch.set_rng_state(_unb64(state["cpu"]))
    if state.get("cuda") and torch.cuda.is_initialized():
        states = [_unb64(s) for s in state["cuda"]]
        torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])


# ---------------------------------------------------------------- safe metadata


def _allowed(module: str, name: str) -> bool:
    if module == "torch.distributed.checkpoint.metadata":
        return True  # DCP's metadata dataclasses and enums; nothing there runs code
    if module == "torch":
        return name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)
    return (module, name) in {
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("torch.serialization", "_get_layout"),
        ("collections", "OrderedDict"),
        ("pathlib", "PosixPath"),
        ("pathlib", "PurePosixPath"),
        ("pathlib", "WindowsPath"),
        ("pathlib", "PureWindowsPath"),
    }


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if not _allowed(module, name):
            raise BadInput(
                f"checkpoint metadata refers to {module}.{name}, which DCP metadata never "
                "holds; refusing to unpickle it",
                path=str(self.path),
            )
        return super().find_class(module, name)


class SafeReader(FileSystemReader):
    """DCP's file reader, with `.metadata` read by an allow-list unpickler (no code runs)."""

    def read_metadata(self, *args, **kwargs) -> Metadata:
        path = Path(self.path) / ".metadata"
        with open(path, "rb") as f:
            metadata = _MetadataUnpickler(f, path).load()
        if not isinstance(metadata, Metadata):
            raise BadInput("not DCP checkpoint metadata", path=str(path))
        extra = [k for k, v in metadata.state_dict_metadata.items()
                 if not isinstance(v, TensorStorageMetadata)]  # fmt: skip
        if extra:
            raise BadInput(
                f"checkpoint holds non-tensor entries ({', '.join(extra[:3])}) that only "
                "pickle could load; refusing",
                path=str(path),
            )
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


# ---------------------------------------------------------------- saving


def _resharded(model: nn.Module) -> nn.Module:
    """FSDP2 leaves the root unsharded after a forward without backward (validation), and the
    state-dict API matches the optimizer's (sharded) parameters by identity: reshard first."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    return model


def _tensor_state(model: nn.Module, optimizers: list) -> tuple[dict, list]:
    """(the tensors DCP writes: model and optimizer state, the optimizer's param groups)."""
    optim = get_optimizer_state_dict(_resharded(model), optimizers)
    return {"model": get_model_state_dict(model), "optim": optim["state"]}, optim["param_groups"]


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def _collective_timeout():
    """The training group's timeout, so the checkpoint group waits no longer than training."""
    from datetime import timedelta

    return timedelta(seconds=distributed.timeout_s())


class CheckpointWriter:
    """Saves checkpoints of one run into `work`, keeping the newest `keep`."""

    def __init__(self, work: Path, keep: int = 2, asynchronous: bool = False):
        self.work, self.keep, self.asynchronous = Path(work), keep, asynchronous
        self._pending: Future | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._group = None

    def save(self, step: int, model: nn.Module, optimizers: list, schedulers: list,
             shared: dict) -> Path:  # fmt: skip
        """Write checkpoint `step` (every rank calls this); `shared` is JSON, the same on all."""
        self.wait()
        final = self.work / f"ckpt-{step:08d}"
        tmp = final.with_name(final.name + TMP)
        tensors, groups = _tensor_state(model, optimizers)
        if _rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            world = dist.get_world_size() if dist.is_initialized() else 1
            _write_json(tmp / STATE, {
                "format": 2, "step": step, "world_size": world, "param_groups": groups,
                "schedulers": [s.state_dict() for s in schedulers], "shared": shared,
            })  # fmt: skip
        _barrier(f"checkpoint {step}")
        _write_json(tmp / f"rank{_rank()}.json", rng_state())
        writer = FileSystemWriter(tmp / SHARDS)
        no_dist = not dist.is_initialized()
        with _collective(f"checkpoint {step}"):
            if self.asynchronous:
                group = self._async_group()
                future = dcp.async_save(tensors, storage_writer=writer, process_group=group,
                                        no_dist=no_dist)  # fmt: skip
                self._pending = self._executor().submit(self._finish, future, tmp, final)
            else:
                dcp.save(tensors, storage_writer=writer, no_dist=no_dist)
                self._finish(None, tmp, final)
        return final

    def _finish(self, future: Future | None, tmp: Path, final: Path) -> None:
        """After every rank wrote: rank 0 renames into place and prunes; all ranks meet."""
        with _collective(f"checkpoint {final.name}"):
            if future is not None:
                future.result()
        if _rank() == 0:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for _, old in checkpoints(self.work)[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        _barrier(f"checkpoint {final.name}", self._group if future is not None else None)

    def wait(self) -> None:
        """Block until the save in flight (if any) is complete and visible to every rank."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        self.wait()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
        return self._pool

    def _async_group(self):
        if self._group is None and dist.is_initialized():
            self._group = dist.new_group(backend="gloo", timeout=_collective_timeout())
        return self._group


# ---------------------------------------------------------------- loading


@dataclass
class Restored:
    step: int
    shared: dict  # what `save` was given: data position, callback state
    world_size: int  # ranks that wrote the checkpoint
    format: int


def read_state(path: Path) -> Restored:
    """A checkpoint's step and JSON state, without reading any tensor."""
    path = Path(path)
    if (path / LEGACY).is_file():
        rank_files = sorted(path.glob("rank*.json"))
        shared = json.loads((path / "rank0.json").read_text()) if rank_files else {}
        return Restored(int(PATTERN.match(path.name).group(1)), shared, len(rank_files), 1)
    state = json.loads((path / STATE).read_text())
    return Restored(state["step"], state["shared"], state["world_size"], 2)


def load(path: Path, model: nn.Module, optimizers: list, schedulers: list) -> Restored:
    """Restore a checkpoint into model/optimizers/schedulers and this rank's RNG."""
    path = Path(path)
    if (path / LEGACY).is_file():
        return _load_format1(path, model, optimizers, schedulers)
    state = json.loads((path / STATE).read_text())
    SafeReader(path / SHARDS).read_metadata()  # refuse a bad one here: DCP would wrap the error
    tensors, _ = _tensor_state(model, optimizers)
    with _collective(f"loading {path.name}"):
        dcp.load(tensors, storage_reader=SafeReader(path / SHARDS),
                 no_dist=not dist.is_initialized())  # fmt: skip
    set_model_state_dict(model, tensors["model"])
    optim = {"state": tensors["optim"], "param_groups": state["param_groups"]}
    set_optimizer_state_dict(model, optimizers, optim)
    for sched, sd in zip(schedulers, state["schedulers"]):
        sched.load_state_dict(sd)
    set_rng_state(json.loads(_rank_file(path).read_text()))
    return Restored(state["step"], state["shared"], state["world_size"], 2)


def _rank_file(path: Path) -> Path:
    """This rank's file; a rank the checkpoint did not have takes rank 0's."""
    mine = path / f"rank{_rank()}.json"
    return mine if mine.is_file() else path / "rank0.json"


def _load_format1(path: Path, model, optimizers, schedulers) -> Restored:
    state = torch.load(path / LEGACY, map_location="cpu", weights_only=True)
    set_model_state_dict(model, state["model"], options=FULL)
    set_optimizer_state_dict(model, optimizers, state["optim"], options=FULL)
    for sched, sd in zip(schedulers, state["sched"]):
        sched.load_state_dict(sd)
    torch.set_rng_state(state["torch_rng"])
    world = len(list(path.glob("rank*.json")))
    return Restored(int(state["step"]), json.loads(_rank_file(path).read_text()), world, 1)


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    """The model's full tensors from a checkpoint, read by this process alone.

    Only the model's entries are read (never the optimizer's), with no collective, so
    rank 0 can export the published model while the other ranks are done.
    """
    path = Path(path)
    if (path / LEGACY).is_file():
        return torch.load(path / LEGACY, map_location="cpu", weights_only=True)["model"]
    reader = SafeReader(path / SHARDS)
    meta = reader.read_metadata()
    model = {
        key.removeprefix("model."): torch.empty(m.size, dtype=m.properties.dtype)
        for key, m in meta.state_dict_metadata.items()
        if key.startswith("model.")
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load({"model": model}, storage_reader=SafeReader(path / SHARDS), no_dist=True)
    return model
