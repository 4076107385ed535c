"""Generation backends behind one interface: transformers everywhere, vLLM on GPU nodes."""

from llmforge.gen.base import Completion, Generator, Prompt, render_prompt, stop_token_ids
from llmforge.gen.transformers_gen import TransformersGenerator
from llmforge.gen.vllm_gen import VLLMGenerator

__all__ = [
    "Completion",
    "Generator",
    "Prompt",
    "TransformersGenerator",
    "VLLMGenerator",
    "render_prompt",
    "stop_token_ids",
]
