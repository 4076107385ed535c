"""Each model feature checked against a naive reference or an exact invariant."""

import dataclasses
import math

import pytest
import torch

from llmforge.errors import ConfigError
from llmforge.model.gpt import GPT, ModelConfig, MoEConfig, RopeScaling, rope_frequencies

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=101, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=48)
    return ModelConfig(**{**base, **kw})


def build(seed=0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny(**kw)).eval()


def tokens(b=2, s=12, seed=1):
    return torch.randint(0, 101, (b, s), generator=torch.Generator().manual_seed(seed))


def copy_shared(src: GPT, dst: GPT) -> None:
    """Copy every parameter dst shares (by name and shape) with src."""
    src_state = src.state_dict()
    dst.load_state_dict({k: src_state.get(k, v) for k, v in dst.state_dict().items()})


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="n_kv_heads"):
        tiny(n_kv_heads=3)
    with pytest.raises(ConfigError, match="top_k"):
        MoEConfig(n_experts=2, top_k=3)
    with pytest.raises(ConfigError, match="factor"):
        RopeScaling(type="yarn", factor=1.0, original_max_seq_len=64)
    with pytest.raises(ConfigError, match="high_freq_factor"):
        RopeScaling(type="llama3", factor=8.0, original_max_seq_len=64, high_freq_factor=0.5)
    with pytest.raises(ConfigError, match="original_max_seq_len"):
        RopeScaling(type="llama3", factor=8.0)
    with pytest.raises(ConfigError, match="'head_dim'.*even"):
        tiny(head_dim=7)
    tiny(d_model=30, n_heads=4, head_dim=8)  # an explicit head size frees d_model


def test_explicit_head_dim_sizes_the_attention():
    """Qwen3-0.6B style: 4 heads of 16 on a width of 32 (heads x head_dim != d_model)."""
    model = build(head_dim=16, qk_norm=True)
    attn = model.layers[0].self_attn
    assert attn.q_proj.weight.shape == (4 * 16, 32) and attn.o_proj.weight.shape == (32, 64)
    assert attn.k_proj.weight.shape == (2 * 16, 32) and attn.q_norm.weight.shape == (16,)
    assert model.inv_freq.shape == (8,) and model.cfg.head_size == 16
    assert tiny().head_size == 8 and tiny().head_dim == 0
    assert model(tokens()).logits.shape == (2, 12, 101)


def test_doc_packing_equals_running_documents_alone():
    model = build(nope_every=2, qk_norm=True)
    a, b = tokens(1, 5, seed=2), tokens(1, 7, seed=3)
    packed = torch.cat([a, b], dim=1)
    doc_ids = torch.tensor([[0] * 5 + [1] * 7])
    with torch.no_grad():
        together = model(packed, doc_ids=doc_ids).logits
        alone = torch.cat([model(a).logits, model(b).logits], dim=1)
        leaky = model(packed).logits
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    assert (leaky[:, 5:] - alone[:, 5:]).abs().max() > 1e-3


def test_rope_positions_matter_and_nope_layers_ignore_them():
    x = tokens(1, 8)
    stretched = torch.arange(8)[None] * 3  # RoPE is relative: a uniform shift would not show
    rope, nope = build(), build(nope_every=1)
    with torch.no_grad():
        assert (rope(x).logits - rope(x, positions=stretched).logits).abs().max() > 1e-4
        torch.testing.assert_close(nope(x).logits, nope(x, positions=stretched).logits)


def test_nope_layer_pattern_matches_smollm3():
    cfg = tiny(n_layers=8, nope_every=4)
    flags = [int(cfg.uses_rope(i)) for i in range(8)]
    assert flags == [int((i + 1) % 4 != 0) for i in range(8)] == [1, 1, 1, 0, 1, 1, 1, 0]
    assert [b.self_attn.use_rope for b in GPT(cfg).layers] == [bool(f) for f in flags]


def test_qk_norm_makes_attention_invariant_to_q_and_k_scale():
    x = tokens()
    for qk_norm, invariant in ((True, True), (False, False)):
        model = build(qk_norm=qk_norm)
        with torch.no_grad():
            before = model(x).logits
            for block in model.layers:
                block.self_attn.q_proj.weight.mul_(7.0)
                block.self_attn.k_proj.weight.mul_(3.0)
            after = model(x).logits
        assert torch.allclose(before, after, atol=1e-4) == invariant


def test_gated_attention_scales_each_head_output_by_sigmoid_gate():
    plain, gated = build(), build(gated_attn=True)
    copy_shared(plain, gated)
    x = tokens()
    with torch.no_grad():
        for block in gated.layers:
            block.self_attn.gate.weight.zero_()  # sigmoid(0) = 0.5 on every channel
        for block in plain.layers:
            block.self_attn.o_proj.weight.mul_(0.5)
        torch.testing.assert_close(gated(x).logits, plain(x).logits, atol=1e-5, rtol=1e-5)
        gated.layers[0].self_attn.gate.weight.normal_()
        assert (gated(x).logits - plain(x).logits).abs().max() > 1e-4


def test_logit_softcap_bounds_logits_and_is_tanh():
    plain, capped = build(), build(logit_softcap=0.05)
    x = tokens()
    with torch.no_grad():
        raw, cap = plain(x).logits, capped(x).logits
    assert cap.abs().max() <= 0.05
    torch.testing.assert_close(cap, 0.05 * torch.tanh(raw / 0.05))


def test_attention_softcap_changes_scores_only_when_small():
    x = tokens()
    plain = build()
    huge, small = build(attn_softcap=1e6), build(attn_softcap=0.01)
    with torch.no_grad():
        torch.testing.assert_close(huge(x).logits, plain(x).logits, atol=1e-5, rtol=1e-5)
        assert (small(x).logits - plain(x).logits).abs().max() > 1e-4


@pytest.mark.parametrize("fused", [True, False])
def test_z_loss_is_mean_squared_logsumexp(fused):
    model = build(fused_ce=fused)
    x, y = tokens(), tokens(seed=5)
    y[0, :4] = -100
    with torch.no_grad():
        out = model(x, targets=y, z_loss=1e-3)
        logits = model(x).logits
    valid = y != -100
    lse = torch.logsumexp(logits, -1)[valid]
    ce = torch.nn.functional.cross_entropy(logits[valid], y[valid])
    torch.testing.assert_close(out.z, lse.pow(2).mean())
    torch.testing.assert_close(out.ce, ce)
    torch.testing.assert_close(out.loss, ce + 1e-3 * lse.pow(2).mean())
    assert (out.logits is None) == fused


def test_fused_ce_gives_same_loss_and_gradients_as_logits_path():
    x, y = tokens(), tokens(seed=5)
    grads, losses = [], []
    for fused in (True, False):
        model = build(fused_ce=fused, logit_softcap=5.0)
        loss = model(x, targets=y, z_loss=1e-4).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(losses[0], losses[1])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4)


def test_tied_embeddings_share_one_tensor():
    tied, untied = build(), build(tie_embeddings=False)
    assert tied.lm_head.weight is tied.embed_tokens.weight
    assert untied.num_params() - tied.num_params() == 101 * 32
    assert tied.num_params(exclude_embeddings=True) == tied.num_params() - 101 * 32
    loss = tied(tokens(), targets=tokens(seed=4)).loss
    loss.backward()
    assert tied.embed_tokens.weight.grad.abs().sum() > 0


def test_embed_scale_multiplies_input_embeddings():
    plain, scaled = build(tie_embeddings=False), build(tie_embeddings=False, embed_scale=3.0)
    copy_shared(plain, scaled)
    with torch.no_grad():
        plain.embed_tokens.weight.mul_(3.0)
        torch.testing.assert_close(scaled(tokens()).logits, plain(tokens()).logits)
    assert tiny(embed_scale=True).embed_multiplier == math.sqrt(32)
    assert tiny().embed_multiplier == 1.0


def test_init_is_truncated_normal_with_configured_std():
    model = build(init_std=0.05, d_model=64, ffn_hidden=128)
    w = model.layers[0].mlp.up_proj.weight
    assert abs(w.std().item() - 0.05 * 0.987) < 0.003  # truncation at 3 std: -1.3%
    assert w.abs().max() <= 0.15 + 1e-6
    out = model.layers[0].self_attn.o_proj.weight
    assert out.abs().max() <= 0.15 / math.sqrt(4) + 1e-6


def test_param_groups_skip_decay_on_embeddings_norms():
    model = build(tie_embeddings=False, qk_norm=True)
    decay, no_decay = model.param_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert id(model.embed_tokens.weight) in no_decay_ids
    assert id(model.norm.weight) in no_decay_ids
    assert id(model.layers[0].self_attn.q_norm.weight) in no_decay_ids
    assert all(p.ndim == 2 for p in decay["params"])
    total = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert total == model.num_params()
    hidden, rest = model.muon_params()
    assert all(p.ndim == 2 for p in hidden) and id(model.lm_head.weight) in {id(p) for p in rest}


def test_yarn_frequencies_match_transformers():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = RopeScaling(type="yarn", factor=4.0, original_max_seq_len=64)
    cfg = tiny(d_model=64, n_heads=2, rope_theta=5000.0, max_seq_len=256, rope_scaling=scaling)
    hf = LlamaConfig(
        hidden_size=64, num_attention_heads=2, max_position_embeddings=256,
        rope_parameters={"rope_type": "yarn", "rope_theta": 5000.0, "factor": 4.0,
                         "original_max_position_embeddings": 64},
    )  # fmt: skip
    hf_freq, hf_scale = ROPE_INIT_FUNCTIONS["yarn"](hf, "cpu")
    ours, scale = rope_frequencies(cfg)
    torch.testing.assert_close(ours, hf_freq)
    assert scale == pytest.approx(hf_scale)


def test_llama3_frequencies_match_transformers():
    """Llama 3.1/3.2 scaling; theta 1e4 and head size 8 give wavelengths of 6.3, 63, 628
    and 6283 tokens: with 64 original positions one of each kind (kept < 16, mixed, slowed
    > 64)."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0)
    scaling = RopeScaling(type="llama3", original_max_seq_len=64, **params)
    cfg = tiny(rope_theta=10000.0, max_seq_len=512, rope_scaling=scaling)
    hf = LlamaConfig(
        hidden_size=32, num_attention_heads=4, max_position_embeddings=512,
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0,
                         "original_max_position_embeddings": 64, **params},
    )  # fmt: skip
    hf_freq, hf_scale = ROPE_INIT_FUNCTIONS["llama3"](hf, "cpu")
    ours, scale = rope_frequencies(cfg)
    assert torch.equal(ours, hf_freq) and scale == hf_scale == 1.0
    plain = rope_frequencies(tiny(rope_theta=10000.0))[0]
    ratio = (plain / ours).tolist()
    assert ratio[0] == 1.0 and 1.0 < ratio[1] < 8.0 and ratio[2:] == pytest.approx([8.0, 8.0])


def naive_moe(moe, x):
    """Per token: pick top-k of (score + bias), mix the unbiased scores normalised."""
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        scores = torch.sigmoid(moe.router.weight @ x[t])
        chosen = torch.topk(scores + moe.expert_bias, moe.top_k).indices
        w = scores[chosen] / scores[chosen].sum()
        for e, we in zip(chosen.tolist(), w):
            out[t] += we * moe.experts[e](x[t : t + 1])[0]
        if moe.shared_expert is not None:
            out[t] += moe.shared_expert(x[t : t + 1])[0]
    return out


def moe_model(**moe_kw):
    return build(moe=MoEConfig(**{"n_experts": 4, "top_k": 2, **moe_kw}))


@pytest.mark.parametrize("shared", [False, True])
def test_moe_matches_naive_routing(shared):
    moe = moe_model(shared_expert=shared).layers[0].mlp
    x = torch.randn(10, 32)
    with torch.no_grad():
        moe.expert_bias.copy_(torch.tensor([0.3, -0.2, 0.0, 0.1]))
        out, load = moe(x)
        torch.testing.assert_close(out, naive_moe(moe, x), atol=1e-5, rtol=1e-5)
    assert load.sum() == 20


def test_moe_bias_moves_against_load_and_changes_selection_only():
    model = moe_model(dense_layers=1)
    assert len(model.moe_layers()) == 1
    moe = model.moe_layers()[0]
    x = tokens(4, 16)
    with torch.no_grad():
        moe.router.weight[0] += 1.0  # make expert 0 popular
        model(x)  # eval mode: not counted
        assert moe.expert_load.sum() == 0
        model.train()(x)
        load = moe.expert_load.clone()
        stats = model.update_moe_bias(0.01)
    mean = load.mean()
    expected = 0.01 * torch.sign(mean - load)
    torch.testing.assert_close(moe.expert_bias, expected)
    assert moe.expert_bias[0] < 0 and load[0] == load.max()
    assert moe.expert_load.sum() == 0
    assert stats["moe_tokens_per_expert"] == load.tolist()
    assert stats["moe_imbalance"] == pytest.approx((load.max() / mean).item())
    with torch.no_grad():  # a huge bias forces the choice, but mixing weights ignore it
        moe.expert_bias.copy_(torch.tensor([-100.0, -100.0, 0.0, 0.0]))
        chosen, weights = moe.route(torch.randn(5, 32))
    assert set(chosen.flatten().tolist()) == {2, 3}
    torch.testing.assert_close(weights.sum(-1), torch.ones(5))


def test_moe_forward_backward_reports_load():
    model = moe_model(shared_expert=True)
    out = model(tokens(), targets=tokens(seed=3))
    out.loss.backward()
    assert out.aux["moe_load"].shape == (2, 4)
    assert (out.aux["moe_load"].sum(-1) == 2 * 12 * 2).all()
    assert all(e.up_proj.weight.grad is not None for e in model.moe_layers()[0].experts)


def test_config_roundtrips_through_dict():
    from llmforge.config import from_dict, to_dict

    cfg = tiny(moe=MoEConfig(n_experts=2, top_k=1), logit_softcap=30.0, embed_scale=True)
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg
    assert dataclasses.replace(cfg, nope_every=4).nope_every == 4


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_packed_training_step_keeps_documents_apart(softcap):
    """Backward through the CPU document-mask paths (SDPA mask; eager with a softcap): the
    loss on the second document has no gradient on the first document's embeddings."""
    model = build(attn_softcap=softcap, tie_embeddings=False)
    x = torch.arange(12)[None] + 10  # distinct tokens, so embedding rows map to positions
    targets = torch.full_like(x, -100)
    targets[0, 6:] = x[0, 6:]
    doc_ids = torch.tensor([[0] * 6 + [1] * 6])
    model(x, targets=targets, doc_ids=doc_ids).loss.backward()
    grad = model.embed_tokens.weight.grad
    assert grad[10:16].abs().max() == 0 and grad[16:22].abs().max() > 0


def test_bf16_cast_keeps_rope_frequencies_fp32(monkeypatch):
    import llmforge.model.gpt as gpt

    seen = []

    def spy(x, positions, inv_freq, scale=1.0):
        seen.append(inv_freq)
        return x

    monkeypatch.setattr(gpt, "apply_rope", spy)
    model = build().bfloat16()
    with torch.no_grad():
        model(tokens(1, 8))
    assert model.inv_freq.dtype == torch.bfloat16  # .bfloat16() rounded the buffer ...
    expected = rope_frequencies(model.cfg)[0]
    assert all(f.dtype == torch.float32 and torch.equal(f, expected) for f in seen)  # ... not RoPE


def test_meta_device_build_then_init_weights():
    cfg = tiny(rope_scaling=RopeScaling(type="yarn", factor=2.0, original_max_seq_len=32))
    with torch.device("meta"):
        model = GPT(cfg)
    model.to_empty(device="cpu")
    model.init_weights()
    torch.testing.assert_close(model.inv_freq, rope_frequencies(cfg)[0])
    assert model.lm_head.weight is model.embed_tokens.weight
    assert torch.isfinite(model(tokens()).logits).all()


def test_gradient_checkpointing_same_grads_and_moe_counted_once():
    x, y = tokens(), tokens(seed=5)
    results = []
    for ckpt in (False, True):
        model = moe_model(shared_expert=True).train()
        model.gradient_checkpointing = ckpt
        model(x, targets=y).loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append((grads, model.moe_layers()[0].expert_load.clone()))
    (plain, plain_load), (ckpt, ckpt_load) = results
    torch.testing.assert_close(ckpt_load, plain_load)
    assert plain_load.sum() == 2 * 12 * 2
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name])
