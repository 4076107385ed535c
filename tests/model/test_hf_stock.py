"""The stock-config mapping on the published config.json files of the checkpoints users
continue (Qwen3-0.6B/8B, Llama 3.2 1B, SmolLM3-3B, as released, legacy keys included), and
the clear refusal of what the model lacks. Weights and parity: tests/stages/test_stock_checkpoints.py.
"""

import pytest

from llmforge.errors import BadInput
from llmforge.model.gpt import RopeScaling
from llmforge.model.hf_stock import CONFIGS, config_from_hf, continued_config

COMMON = dict(attention_bias=False, attention_dropout=0.0, hidden_act="silu",
              initializer_range=0.02, use_cache=True, torch_dtype="bfloat16")  # fmt: skip
LLAMA_3_2_1B = dict(
    COMMON, architectures=["LlamaForCausalLM"], model_type="llama", bos_token_id=128000,
    eos_token_id=128001, head_dim=64, hidden_size=2048, intermediate_size=8192,
    max_position_embeddings=131072, mlp_bias=False, num_attention_heads=32,
    num_hidden_layers=16, num_key_value_heads=8, pretraining_tp=1, rms_norm_eps=1e-05,
    rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    rope_theta=500000.0, tie_word_embeddings=True, vocab_size=128256,
)  # fmt: skip
QWEN3_0_6B = dict(
    COMMON, architectures=["Qwen3ForCausalLM"], model_type="qwen3", bos_token_id=151643,
    eos_token_id=151645, head_dim=128, hidden_size=1024, intermediate_size=3072,
    max_position_embeddings=40960, max_window_layers=28, num_attention_heads=16,
    num_hidden_layers=28, num_key_value_heads=8, rms_norm_eps=1e-06, rope_scaling=None,
    rope_theta=1000000, sliding_window=None, tie_word_embeddings=True,
    use_sliding_window=False, vocab_size=151936,
)  # fmt: skip
QWEN3_8B = dict(QWEN3_0_6B, hidden_size=4096, intermediate_size=12288, num_attention_heads=32,
                num_hidden_layers=36, tie_word_embeddings=False)  # fmt: skip
SMOLLM3_3B = dict(
    COMMON,
    architectures=["SmolLM3ForCausalLM"],
    model_type="smollm3",
    bos_token_id=None,
    eos_token_id=128012,
    pad_token_id=128004,
    hidden_size=2048,
    intermediate_size=11008,
    max_position_embeddings=65536,
    max_window_layers=28,
    mlp_bias=False,
    no_rope_layer_interval=4,
    no_rope_layers=[int((i + 1) % 4 != 0) for i in range(36)],
    num_attention_heads=16,
    num_hidden_layers=36,
    num_key_value_heads=4,
    pretraining_tp=2,
    rms_norm_eps=1e-06,
    rope_scaling=None,
    rope_theta=5000000.0,
    sliding_window=None,
    use_sliding_window=False,
    vocab_size=128256,
)  # fmt: skip  (no tie_word_embeddings: SmolLM3's class default, tied, applies)
LLAMA3 = RopeScaling(type="llama3", factor=32.0, original_max_seq_len=8192)
PUBLISHED = {
    "llama-3.2-1b": (LLAMA_3_2_1B, dict(head_dim=0, head_size=64, rope_theta=500000.0, rope_scaling=LLAMA3,
                                        tie_embeddings=True, norm_eps=1e-5)),
    "qwen3-0.6b": (QWEN3_0_6B, dict(head_dim=128, d_model=1024, qk_norm=True,
                                    tie_embeddings=True, rope_theta=1e6)),
    "qwen3-8b": (QWEN3_8B, dict(head_dim=0, head_size=128, n_heads=32, tie_embeddings=False)),
    "smollm3-3b": (SMOLLM3_3B, dict(nope_every=4, tie_embeddings=True, rope_theta=5e6,
                                    qk_norm=False)),
}  # fmt: skip


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_configs_map_and_come_back_unchanged(name):
    hf, expected = PUBLISHED[name]
    cfg = config_from_hf(hf)
    assert {k: getattr(cfg, k) for k in expected} == expected
    family = hf["model_type"]
    as_read = CONFIGS[family].from_dict(hf).to_dict()  # what transformers makes of the file
    assert continued_config(hf, cfg, family).to_dict() == as_read


BASE = dict(model_type="llama", vocab_size=97, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=48, max_position_embeddings=64)  # fmt: skip


@pytest.mark.parametrize(
    "rope, match",
    [
        ({"rope_type": "dynamic", "factor": 2.0}, "rope_type 'dynamic' is not supported.*yarn"),
        ({"rope_type": "linear", "factor": 2.0}, "rope_type 'linear' is not supported"),
        ({"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [2.0] * 4,
          "original_max_position_embeddings": 32}, "'longrope'.*default, yarn, llama3"),
        ({"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32,
          "mscale": 1.0}, "'mscale' is not supported"),
        ({"rope_type": "default", "partial_rotary_factor": 0.5}, "'partial_rotary_factor'"),
        ({"rope_type": "llama3", "factor": 8.0}, "does not load as llama.*low_freq_factor"),
    ],
)  # fmt: skip
def test_rope_we_do_not_compute_is_refused_by_name(rope, match):
    with pytest.raises(BadInput, match=match):
        config_from_hf({**BASE, "rope_parameters": {"rope_theta": 1e4, **rope}})


@pytest.mark.parametrize(
    "extra, match",
    [
        (dict(model_type="mistral"), "'mistral'.*continue llama, qwen3 and smollm3"),
        (dict(model_type="qwen3", use_sliding_window=True, sliding_window=16,
              max_window_layers=0), "use_sliding_window"),
        (dict(model_type="smollm3", no_rope_layers=[1, 0]), None),
        (dict(model_type="smollm3", num_hidden_layers=3, no_rope_layers=[0, 1, 1]),
         "no_rope_layers.*not every Nth"),
        (dict(hidden_act="gelu"), "'hidden_act' = 'gelu'"),
    ],
)  # fmt: skip
def test_other_features_and_families(extra, match):
    if match is None:
        assert config_from_hf({**BASE, **extra}).nope_every == 2
        return
    with pytest.raises(BadInput, match=match):
        config_from_hf({**BASE, **extra})
