"""The one place that owns the process group, device placement and every collective.

Under torchrun (or `accelerate launch`, or a Slurm job that runs torchrun) `init()` starts
the process group with a backend that serves CPU and CUDA tensors alike,
`cpu:gloo,cuda:nccl` on GPU nodes and `gloo` elsewhere, and a bounded collective timeout
(`LLMFORGE_COLLECTIVE_TIMEOUT_S`, default 600 s), so a rank whose peers died fails instead
of hanging until Slurm kills the job. `device()` is this rank's compute device and
`place(model)` puts a model there.

The collectives llmforge needs (`all_reduce` of a tensor or a Python number, `any_rank`,
`broadcast_object`, `main_decides`, `barrier`) put their tensor on a device the group
serves and hand the result back where the caller had it. No other module in llmforge/ or
stages/ calls `torch.distributed` collectives itself: with `LLMFORGE_COLLECTIVE_CHECK=1`
(the test suite sets it) `init()` wraps torch's collectives so that a call from anywhere
else in llmforge, or a tensor on a device the group does not serve (a CPU tensor handed to
an NCCL-only group), raises `CollectiveMisuse` at the call instead of deep inside NCCL.
Without a process group every collective is the identity.
"""

from __future__ import annotations

import datetime
import functools
import math
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from llmforge.errors import BadInput, LLMForgeError, RunFailed

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch is imported inside the functions: the CLI (stage.py) imports this module, and
# `llmforge --help` or a tokenize run must not pay for importing torch.

TIMEOUT_ENV = "LLMFORGE_COLLECTIVE_TIMEOUT_S"
CHECK_ENV = "LLMFORGE_COLLECTIVE_CHECK"
DEFAULT_TIMEOUT_S = 600.0
# Which tensors each backend takes. gloo can stage CUDA tensors for some collectives, but a
# mixed group sends those to NCCL, so gloo counts as CPU-only here.
BACKEND_DEVICES = {"gloo": "cpu", "mpi": "cpu", "nccl": "cuda", "xccl": "xpu"}
T = TypeVar("T")


class CollectiveMisuse(RuntimeError):
    """A collective bypassed this module, or got a tensor on a device its group does not serve."""


# ---------------------------------------------------------------- the process group


def backend() -> str:
    """The backend string `init()` uses: both devices on GPU nodes, gloo elsewhere."""
    import torch

    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def timeout_s() -> float:
    """The collective timeout from `LLMFORGE_COLLECTIVE_TIMEOUT_S` (seconds, > 0)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise BadInput(f"environment variable {TIMEOUT_ENV}={raw!r}: must be seconds > 0")
    return value


def init(*, rank: int | None = None, world_size: int | None = None,
         init_method: str | None = None) -> tuple[int, int]:  # fmt: skip
    """(rank, world size). Starts the process group when launched with WORLD_SIZE > 1 (or
    when `world_size` > 1 is given) and none is running yet; idempotent."""
    world = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not is_distributed():
        import torch
        import torch.distributed as dist

        if torch.cuda.is_available():
            torch.cuda.set_device(device())
        dist.init_process_group(
            backend(),
            init_method=init_method,
            timeout=datetime.timedelta(seconds=timeout_s()),
            rank=-1 if rank is None else rank,
            world_size=-1 if world_size is None else world_size,
        )
    if is_distributed() and os.environ.get(CHECK_ENV, "0") not in ("", "0"):
        install_check()
    return get_rank(), get_world_size()


def _dist():
    import torch.distributed as dist

    return dist


def is_distributed() -> bool:
    """True while a process group runs (never without torch imported)."""
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return _dist().get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return _dist().get_world_size() if is_distributed() else 1


def destroy() -> None:
    if is_distributed():
        _dist().destroy_process_group()


# ---------------------------------------------------------------- device placement


def device() -> torch.device:
    """This rank's compute device: its GPU (LOCAL_RANK) when there is one, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def place(model: nn.Module) -> nn.Module:
    """`model` moved to this rank's compute device (in place, as `Module.to` does)."""
    return model.to(device())


def model_device(model: nn.Module) -> torch.device:
    """Where `model`'s parameters live (the CPU for a model without any)."""
    import torch

    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def to_device(data: T, where: torch.device) -> T:
    """Every tensor in `data` (a tensor, or a dict, list, tuple or named tuple of them)
    moved to `where`; anything else is left as it is."""
    import torch

    if isinstance(data, torch.Tensor):
        # Asynchronous only towards a device: a device-to-host copy must finish before use.
        return data.to(where, non_blocking=torch.device(where).type != "cpu")
    if isinstance(data, dict):
        return {k: to_device(v, where) for k, v in data.items()}
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(to_device(v, where) for v in data))
    if isinstance(data, list | tuple):
        return type(data)(to_device(v, where) for v in data)
    return data


def served_device_types(group=None) -> set[str]:
    """Device types a group's backends take (default group; "cpu:gloo,cuda:nccl" takes both)."""
    if not is_distributed():
        return {"cpu", device().type}
    names = [part.rpartition(":")[2] for part in str(_dist().get_backend(group)).split(",")]
    return {BACKEND_DEVICES[n] for n in names if n in BACKEND_DEVICES} or {"cpu"}


def group_device(preferred: torch.device | None = None, group=None) -> torch.device:
    """Where a collective's tensor goes: `preferred` if the group serves it, else the
    compute device if served, else the CPU."""
    import torch

    served = served_device_types(group)
    for candidate in (preferred, device()):
        if candidate is not None and candidate.type in served:
            return candidate
    return torch.device("cpu")


# ---------------------------------------------------------------- collectives

_OPS = {"sum": "SUM", "avg": "AVG", "max": "MAX", "min": "MIN"}


def all_reduce(value: T, op: str = "sum", group=None) -> T:
    """`value` reduced over the ranks of `group` (default: all; op: sum, avg, max or min).

    A tensor comes back on its own device (with its dtype), a Python number as a number.
    """
    if not is_distributed():
        return value
    import torch
    import torch.distributed as dist

    reduce_op = getattr(dist.ReduceOp, _OPS[op])
    if isinstance(value, torch.Tensor):
        work = value.detach().to(group_device(value.device, group), copy=True)
        dist.all_reduce(work, op=reduce_op, group=group)
        return work.to(value.device)
    cpu = torch.device("cpu")
    work = torch.tensor([float(value)], dtype=torch.float64, device=group_device(cpu, group))
    dist.all_reduce(work, op=reduce_op, group=group)
    return type(value)(work.item())


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on at least one."""
    return bool(all_reduce(int(flag), "max"))


def broadcast_object(obj: Any = None, src: int = 0) -> Any:
    """`obj` of rank `src` (any picklable value), on every rank."""
    if not is_distributed():
        return obj
    import torch
    import torch.distributed as dist

    box = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=group_device(torch.device("cpu")))
    return box[0]


def main_decides(decide: Callable[[], T]) -> T:
    """Run `decide` on rank 0 only; every rank returns its result, or raises its error.

    An llmforge error keeps its exit code (2 for bad input, 1 otherwise) and its message on
    every rank, so all of them stop at once with the same verdict.
    """
    if not is_distributed():
        return decide()
    if get_rank() != 0:
        verdict = broadcast_object()
        if verdict["ok"]:
            return verdict["value"]
        error = BadInput if verdict["exit_code"] == 2 else RunFailed
        raise error(f"rank 0: {verdict['message']}")
    try:
        value = decide()
    except Exception as e:  # told to every rank, then raised here unchanged
        code = e.exit_code if isinstance(e, LLMForgeError) else 1
        message = str(e) if isinstance(e, LLMForgeError) else f"{type(e).__name__}: {e}"
        broadcast_object({"ok": False, "exit_code": code, "message": message})
        raise
    broadcast_object({"ok": True, "value": value})
    return value


def barrier(group=None) -> None:
    """Wait for every rank of `group` (default: all)."""
    if not is_distributed():
        return
    import torch
    import torch.distributed as dist

    where = group_device(torch.device("cpu"), group)
    if where.type == "cuda":
        dist.barrier(group=group, device_ids=[where.index or 0])
    else:
        dist.barrier(group=group)


# ------------------------------------------- subgroup collectives (expert/context parallel)


def all_to_all(tensor: torch.Tensor, group, output_splits: list[int] | None = None,
               input_splits: list[int] | None = None) -> torch.Tensor:  # fmt: skip
    """Rows of `tensor` (split by `input_splits`, or evenly) to each rank of `group`.

    Differentiable: the functional collective's backward is the reverse all-to-all, which
    is what dispatching tokens to experts (and heads to ranks) needs. gloo implements
    `all_to_all_single` with even and uneven splits in torch 2.13.
    """
    import torch.distributed._functional_collectives as funcol

    where = tensor.device
    moved = tensor.to(group_device(where, group)).contiguous()
    out = funcol.all_to_all_single_autograd(moved, output_splits, input_splits, group)
    return funcol.wait_tensor(out).to(where)


def exchange_counts(counts: torch.Tensor, group) -> torch.Tensor:
    """Rank r's counts[j] reach rank j as its received[r] (no gradient)."""
    import torch

    moved = counts.to(group_device(counts.device, group))
    received = torch.empty_like(moved)
    _dist().all_to_all_single(received, moved, group=group)
    return received.to(counts.device)


def all_gather_objects(obj: Any, group=None) -> list:
    """Every rank's picklable `obj`, in rank order (small payloads only)."""
    if not is_distributed():
        return [obj]
    dist = _dist()
    everyone = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, obj, group=group)
    return everyone


def group_size(group=None) -> int:
    return _dist().get_world_size(group) if is_distributed() else 1


# ---------------------------------------------------------------- the discipline check

COLLECTIVES = (
    "all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "all_to_all",
    "all_to_all_single", "barrier", "broadcast", "broadcast_object_list", "gather",
    "gather_object", "irecv", "isend", "monitored_barrier", "recv", "reduce", "reduce_scatter",
    "reduce_scatter_tensor", "scatter", "scatter_object_list", "send",
)  # fmt: skip
_OWN_PACKAGES = ("llmforge", "stages")


def install_check() -> None:
    """Wrap torch.distributed's collectives with `_checked` (once per process)."""
    import torch.distributed as dist
    from torch.distributed import distributed_c10d

    for namespace in (dist, distributed_c10d):
        for name in COLLECTIVES:
            fn = getattr(namespace, name, None)
            if fn is not None and not getattr(fn, "_llmforge_checked", False):
                setattr(namespace, name, _checked(name, fn))


def check_installed() -> bool:
    return getattr(_dist().all_reduce, "_llmforge_checked", False)


def _checked(name: str, fn: Callable) -> Callable:
    @functools.wraps(fn)
    def checked(*args, **kwargs):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller.split(".")[0] in _OWN_PACKAGES and caller != __name__:
            raise CollectiveMisuse(
                f"{caller} calls torch.distributed.{name} directly; "
                "route it through llmforge.distributed"
            )
        group = kwargs.get("group")
        served = served_device_types(group)
        for t in _tensors(args, kwargs):
            if t.device.type not in served:
                raise CollectiveMisuse(
                    f"torch.distributed.{name} got a tensor on {t.device}, but the process "
                    f"group ({_dist().get_backend(group)}) serves only {sorted(served)}"
                )
        return fn(*args, **kwargs)

    checked._llmforge_checked = True
    return checked


def _tensors(args: tuple, kwargs: dict) -> Iterator[torch.Tensor]:
    import torch

    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, list | tuple):
            yield from (v for v in value if isinstance(v, torch.Tensor))
