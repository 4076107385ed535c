"""llmforge: train language models the way frontier labs do, one CLI stage at a time."""

__version__ = "0.1.0"
