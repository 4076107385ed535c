"""Parameter and FLOPs counts against a hand count, the built model and torch's FLOP counter."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from llmforge.model.flops import count_params, flops_per_token, matmul_params_per_token
from llmforge.model.gpt import GPT, ModelConfig, MoEConfig

BASE = dict(vocab_size=101, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=48)
VARIANTS = {
    "dense": {},
    "untied-gated-qknorm": dict(tie_embeddings=False, gated_attn=True, qk_norm=True),
    "head-dim-12-qknorm": dict(head_dim=12, qk_norm=True),  # Qwen3: heads x head_dim != d_model
    "moe": dict(moe=MoEConfig(n_experts=4, top_k=2, shared_expert=True, dense_layers=1)),
    "moe-small-experts": dict(moe=MoEConfig(n_experts=3, top_k=1, expert_hidden=16)),
}


def test_hand_count_dense():
    cfg = ModelConfig(**BASE)
    attn = 32 * 32 + 2 * 32 * 16 + 32 * 32  # q, k, v (2 KV heads of 8), o
    mlp = 3 * 32 * 48
    layer = attn + mlp + 2 * 32  # + two norms
    counts = count_params(cfg)
    assert counts["embedding"] == 101 * 32
    assert counts["total"] == 101 * 32 + 2 * layer + 32
    assert counts["active"] == counts["total"]
    assert matmul_params_per_token(cfg) == 2 * (attn + mlp) + 101 * 32
    n = 2 * (attn + mlp) + 101 * 32
    assert flops_per_token(cfg, 64) == 6 * n + 12 * 2 * 4 * 8 * 64
    assert flops_per_token(cfg, 64, causal=True) == 6 * n + 6 * 2 * 4 * 8 * 64


def test_hand_count_moe_active():
    moe = MoEConfig(n_experts=4, top_k=2, shared_expert=True, dense_layers=1)
    counts = count_params(ModelConfig(**BASE, moe=moe))
    dense = count_params(ModelConfig(**BASE))
    expert = 3 * 32 * 48
    router = 32 * 4
    # layer 1 swaps one dense MLP (= one expert) for router + 4 experts + shared
    assert counts["total"] == dense["total"] + router + 4 * expert
    assert counts["active"] == dense["total"] + router + 2 * expert


@pytest.mark.parametrize("name", list(VARIANTS))
def test_count_matches_built_model(name):
    cfg = ModelConfig(**BASE, **VARIANTS[name])
    model = GPT(cfg)
    counts = count_params(cfg)
    assert counts["total"] == model.num_params()
    assert counts["non_embedding"] == model.num_params(exclude_embeddings=True)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_flops_match_torch_flop_counter(name):
    """The eager attention path (used for attention soft-capping) materialises the full
    S x S scores, which is exactly the non-causal term; a huge cap leaves the model as is."""
    cfg = ModelConfig(**BASE, **VARIANTS[name], attn_softcap=1e6, fused_ce=False)
    model = GPT(cfg)
    x = torch.randint(0, 101, (2, 16))
    with FlopCounterMode(display=False) as counter:
        model(x, targets=x).loss.backward()
    assert counter.get_total_flops() == flops_per_token(cfg, 16) * 2 * 16
