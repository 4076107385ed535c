"""Kernel tests run the Triton kernels on CPU tensors in the Triton interpreter.

The root conftest sets TRITON_INTERPRET=1 before anything imports triton; setting it here
as well keeps `pytest tests/kernels` working on its own. Never on a CUDA machine: there
the interpreter would run the `gpu` tests' real-shape launches on the CPU, for minutes.
Without the interpreter and without CUDA, Triton cannot launch anything, so the tests
skip with that reason.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="Triton needs CUDA or TRITON_INTERPRET=1 set before import")
    for item in items:
        if "tests/kernels" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture
def force_triton(monkeypatch):
    """Route the public ops through the Triton kernels even for CPU tensors."""
    monkeypatch.setenv("LLMFORGE_FORCE_TRITON", "1")
    monkeypatch.delenv("LLMFORGE_DISABLE_TRITON", raising=False)
