"""Raw Triton kernels and their launch wrappers.

Nothing outside `llmforge.ops` imports these: the ops add autograd, the pure-torch
references and the dispatch rule (Triton on CUDA only). Importing a kernel module imports
triton, so the ops import them lazily, only when a call is routed to Triton.
"""
