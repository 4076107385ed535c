"""Parameter and FLOPs counts from a ModelConfig alone, for MFU and scaling-law bookkeeping.

`count_params` matches `GPT(cfg).num_params()` exactly (a test checks it) without building
the model, so it works for configs too big for this machine.

`flops_per_token` is the training cost of one token, forward plus backward:

    6 * N_matmul  +  12 * n_layers * n_heads * head_dim * seq_len

`N_matmul` counts the weights each token multiplies by: the attention and MLP matrices,
for MoE only the router, the top_k routed experts and the shared expert, and the output
head (V x d, also when tied to the embedding; the embedding lookup itself costs nothing).
The second term is the attention scores and their weighted sum (PaLM appendix B). It
counts the full S x S square, as PaLM, nanochat and most MFU figures do; pass
`causal=True` to halve it to the work a causal kernel really does.
"""

from __future__ import annotations

from llmforge.model.gpt import ModelConfig


def _attention_params(cfg: ModelConfig) -> int:
    q_out = cfg.n_heads * cfg.head_size
    kv_out = cfg.n_kv_heads * cfg.head_size
    matrices = cfg.d_model * (2 * q_out + 2 * kv_out)  # q, o and k, v
    if cfg.gated_attn:
        matrices += cfg.d_model * q_out
    return matrices


def _mlp_params(cfg: ModelConfig, layer: int) -> tuple[int, int]:
    """(all, active per token) MLP weights of one layer."""
    if not cfg.is_moe(layer):
        dense = 3 * cfg.d_model * cfg.ffn_hidden
        return dense, dense
    moe = cfg.moe
    expert = 3 * cfg.d_model * (moe.expert_hidden or cfg.ffn_hidden)
    shared = expert if moe.shared_expert else 0
    router = cfg.d_model * moe.n_experts
    return router + moe.n_experts * expert + shared, router + moe.top_k * expert + shared


def count_params(cfg: ModelConfig) -> dict[str, int]:
    """total, embedding, non_embedding (= total - embedding), active, active_non_embedding.

    A tied head is counted once (inside `embedding`); an untied head is non-embedding.
    `active` counts only the top_k routed experts of each MoE layer.
    """
    norms_per_layer = 2 * cfg.d_model + (2 * cfg.head_size if cfg.qk_norm else 0)
    embedding = cfg.vocab_size * cfg.d_model
    head = 0 if cfg.tie_embeddings else embedding
    total = active = embedding + head + cfg.d_model  # + final norm
    for layer in range(cfg.n_layers):
        mlp_all, mlp_active = _mlp_params(cfg, layer)
        shared = _attention_params(cfg) + norms_per_layer
        total += shared + mlp_all
        active += shared + mlp_active
    return {
        "total": total,
        "embedding": embedding,
        "non_embedding": total - embedding,
        "active": active,
        "active_non_embedding": active - embedding,
    }


def matmul_params_per_token(cfg: ModelConfig) -> int:
    """Weights one token is multiplied by: active layer matrices plus the output head."""
    layers = sum(_attention_params(cfg) + _mlp_params(cfg, i)[1] for i in range(cfg.n_layers))
    return layers + cfg.vocab_size * cfg.d_model


def flops_per_token(cfg: ModelConfig, seq_len: int, causal: bool = False) -> float:
    """Training FLOPs (forward + backward) per token at `seq_len`; see the module docstring."""
    attention = 12 * cfg.n_layers * cfg.n_heads * cfg.head_size * seq_len
    if causal:
        attention /= 2
    return float(6 * matmul_params_per_token(cfg) + attention)
