"""Generation backends behind one interface: transformers everywhere, vLLM on GPU nodes.

The backends load on first use (PEP 562), so a torch-free module such as a config can
import `llmforge.gen.tools` or `llmforge.gen.base` without importing torch.
"""

import importlib

from llmforge.gen.base import Completion, Generator, Prompt, render_prompt, stop_token_ids

_BACKENDS = {
    "TransformersGenerator": "llmforge.gen.transformers_gen",
    "VLLMGenerator": "llmforge.gen.vllm_gen",
}

__all__ = [
    "Completion",
    "Generator",
    "Prompt",
    "TransformersGenerator",
    "VLLMGenerator",
    "render_prompt",
    "stop_token_ids",
]


def __getattr__(name: str):
    if name in _BACKENDS:
        return getattr(importlib.import_module(_BACKENDS[name]), name)
    raise AttributeError(f"module 'llmforge.gen' has no attribute {name!r}")
