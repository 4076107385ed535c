"""A model that lives on another device as far as its callers can tell, for checking device
placement on a machine with only a CPU.

`ClaimsDevice(inner)` holds a parameter on torch's `lazy` device (the TorchScript lazy
backend, which computes on the CPU and ships with every torch build), so code that asks a
model for its device gets `lazy`; it runs `inner` on the CPU and lists in `seen` the device
of every tensor it was called with. Code that feeds a GPU model CPU tensors shows up as a
`cpu` in `seen`.

`host_reads(monkeypatch, under)` lists where code under a directory reads a non-CPU
tensor's values on the host (on a GPU each such read waits for the device); on the lazy
device those are real syncs of its graph, so a test can count them on a CPU.
"""

import functools
import sys
from pathlib import Path

import pytest
import torch
from torch import nn


@functools.cache
def lazy_device() -> torch.device:
    try:
        import torch._lazy.ts_backend

        torch._lazy.ts_backend.init()
    except (ImportError, RuntimeError) as e:  # a torch build without the lazy backend
        pytest.skip(f"torch's lazy device is unavailable here ({e})")
    return torch.device("lazy")


class ClaimsDevice(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.marker = nn.Parameter(torch.empty(0, device=lazy_device()))  # the first parameter
        self.inner = inner
        self.seen: list[str] = []

    def forward(self, **inputs):
        tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        self.seen += [v.device.type for v in tensors.values()]
        return self.inner(**{**inputs, **{k: v.to("cpu") for k, v in tensors.items()}})


def host_reads(monkeypatch, under: str) -> list[str]:
    """Each `.item()`, `float()`, `int()`, `bool()`, `.cpu()`, `.to(cpu)` or `.tolist()` of a
    non-CPU tensor called from a file under `under`, as 'file:line method', from now on.
    (A TorchDispatchMode would see every read, but it breaks the lazy device's view ops.)"""
    where: list[str] = []

    def counted(name):
        real = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            caller = sys._getframe(1)
            to_host = name != "to" or "cpu" in map(str, (*args, kwargs.get("device")))
            if (
                self.device.type != "cpu"
                and to_host
                and caller.f_code.co_filename.startswith(under)
            ):
                where.append(f"{Path(caller.f_code.co_filename).name}:{caller.f_lineno} {name}")
            return real(self, *args, **kwargs)

        return read

    for name in ("item", "tolist", "cpu", "to", "__float__", "__int__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    return where
