"""The dispatch rule: which implementation an op call takes.

Triton runs on CUDA tensors only; everything else takes the pure-torch path. Two
environment variables override this:

- `LLMFORGE_FORCE_TRITON=1` routes every call to Triton, even for CPU tensors. Tests use it
  with `TRITON_INTERPRET=1` (set before triton is imported) to check the kernels on CPU.
- `LLMFORGE_DISABLE_TRITON=1` routes every call to the torch path, e.g. to bisect a bug.
"""

from __future__ import annotations

import functools
import importlib.util
import os

from torch import Tensor


@functools.cache
def triton_available() -> bool:
    """True when the triton package is installed (it is not imported here)."""
    return importlib.util.find_spec("triton") is not None


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes")


def use_triton(*tensors: Tensor) -> bool:
    """Whether an op on these tensors should run its Triton kernel."""
    if _flag("LLMFORGE_DISABLE_TRITON") or not triton_available():
        return False
    if _flag("LLMFORGE_FORCE_TRITON"):
        return True
    return all(t.is_cuda for t in tensors)
