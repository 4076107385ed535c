"""The model: our GPT (gpt.py), its attention kernels (attention.py), transformers export
and import (hf.py), parameter and FLOPs counts (flops.py); FSDP2/compile in parallelize.py.

hf.py imports transformers and registers the custom family with its Auto classes; it is not
imported here, so `import llmforge.model` stays light.
"""

from llmforge.model.gpt import GPT, ModelConfig, ModelOutput, MoEConfig, RopeScaling

__all__ = ["GPT", "ModelConfig", "ModelOutput", "MoEConfig", "RopeScaling"]
