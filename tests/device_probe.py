"""A model that lives on another device as far as its callers can tell, for checking device
placement on a machine with only a CPU.

`ClaimsDevice(inner)` holds a parameter on torch's `lazy` device (the TorchScript lazy
backend, which computes on the CPU and ships with every torch build), so code that asks a
model for its device gets `lazy`; it runs `inner` on the CPU and lists in `seen` the device
of every tensor it was called with. Code that feeds a GPU model CPU tensors shows up as a
`cpu` in `seen`.
"""

import functools

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
