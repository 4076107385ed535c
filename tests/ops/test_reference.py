"""The pure-torch references: parity with transformers' Llama and the dispatch rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)

from llmforge import ops
from llmforge.ops.dispatch import use_triton


def _inv_freq(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    return 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)


def test_rms_norm_matches_llama_rmsnorm():
    torch.manual_seed(0)
    norm = LlamaRMSNorm(12, eps=1e-6)
    norm.weight.data.normal_()
    x = torch.randn(3, 5, 12)
    torch.testing.assert_close(ops.rms_norm(x, norm.weight, 1e-6), norm(x))


def test_rms_norm_bf16_returns_input_dtype_with_fp32_math():
    x = torch.randn(4, 64).mul(100).bfloat16()
    w = torch.ones(64, dtype=torch.bfloat16)
    y = ops.rms_norm(x, w)
    assert y.dtype == torch.bfloat16
    rms = y.float().pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones(4), atol=1e-2, rtol=0)


def test_swiglu_is_silu_gate_times_up():
    g, u = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    torch.testing.assert_close(ops.swiglu(g, u), F.silu(g) * u)


def test_rope_matches_llama_with_per_document_positions():
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, num_attention_heads=4, head_dim=8)
    rotary = LlamaRotaryEmbedding(cfg)
    x = torch.randn(2, 6, 4, 8)
    positions = torch.tensor([[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]])
    cos, sin = rotary(x, positions)
    expected, _ = apply_rotary_pos_emb(x.transpose(1, 2), x.transpose(1, 2), cos, sin)
    ours = ops.apply_rope(x, positions, rotary.inv_freq)
    torch.testing.assert_close(ours, expected.transpose(1, 2))


def test_rope_restart_rotates_second_document_like_a_fresh_one():
    x = torch.randn(1, 6, 2, 8)
    packed = ops.apply_rope(x, torch.tensor([[0, 1, 2, 0, 1, 2]]), _inv_freq(8))
    alone = ops.apply_rope(x[:, 3:], torch.tensor([[0, 1, 2]]), _inv_freq(8))
    torch.testing.assert_close(packed[:, 3:], alone)
    assert not torch.allclose(
        packed[:, 3:], ops.apply_rope(x, torch.arange(6)[None], _inv_freq(8))[:, 3:]
    )


def test_rope_scale_multiplies_output_and_position_zero_is_identity():
    x = torch.randn(1, 4, 2, 8)
    pos = torch.zeros(1, 4, dtype=torch.long)
    torch.testing.assert_close(ops.apply_rope(x, pos, _inv_freq(8), scale=1.5), 1.5 * x)


def test_dispatch_uses_reference_on_cpu_unless_forced(monkeypatch):
    t = torch.zeros(2)
    monkeypatch.delenv("LLMFORGE_FORCE_TRITON", raising=False)
    monkeypatch.delenv("LLMFORGE_DISABLE_TRITON", raising=False)
    assert not use_triton(t)
    monkeypatch.setenv("LLMFORGE_FORCE_TRITON", "1")
    assert use_triton(t)
    monkeypatch.setenv("LLMFORGE_DISABLE_TRITON", "1")
    assert not use_triton(t)


@pytest.mark.gpu
def test_dispatch_uses_triton_on_cuda(monkeypatch):
    monkeypatch.delenv("LLMFORGE_DISABLE_TRITON", raising=False)
    assert use_triton(torch.zeros(2, device="cuda"))
