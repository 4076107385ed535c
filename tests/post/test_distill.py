"""On-policy distillation pieces: the held-out reverse-KL measure (zero against itself, its
full-vocabulary value matched by the sampled-token estimate), the vocabulary check and the
mapping onto TRL's DistillationConfig."""

import pytest
import torch

from llmforge.errors import BadInput
from llmforge.post import distill
from llmforge.post.distill import DistillOptions
from llmforge.post.trl_bridge import TrainArgs

PROMPTS = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(24)]


@pytest.fixture(scope="module")
def pair(tiny_model, tiny_tokenizer_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.fixtures_model import publish_random_llama

    teacher_dir = publish_random_llama(
        tmp_path_factory.mktemp("t") / "teacher", tiny_tokenizer_dir, seed=1, logit_scale=4.0
    )
    load = AutoModelForCausalLM.from_pretrained
    student, teacher = load(str(tiny_model)), load(str(teacher_dir))
    return student, teacher, AutoTokenizer.from_pretrained(str(tiny_model))


def test_reverse_kl_is_zero_against_itself(pair):
    student, _, tok = pair
    same = distill.reverse_kl(student, student, tok, PROMPTS[:4], max_new_tokens=8)
    assert same["reverse_kl"] == pytest.approx(0.0, abs=1e-6) and same["tokens"] > 0
    assert same["sampled_log_ratio"] == pytest.approx(0.0, abs=1e-6)


def test_sampled_estimate_matches_the_full_vocabulary_kl(pair):
    """log p_s - log p_t at the sampled tokens averages to the full KL only if each position's
    distribution is read where its token was sampled (an off-by-one breaks the match)."""
    student, teacher, tok = pair
    torch.manual_seed(0)
    m = distill.reverse_kl(student, teacher, tok, PROMPTS, max_new_tokens=24, seed=3)
    assert m["reverse_kl"] > 0.5 and m["tokens"] > 300
    assert m["sampled_log_ratio"] == pytest.approx(m["reverse_kl"], rel=0.15)
    again = distill.reverse_kl(student, teacher, tok, PROMPTS, max_new_tokens=24, seed=3)
    assert again == m  # seeded sampling: the same measure twice


def test_vocabulary_mismatch_is_bad_input(pair):
    from transformers import LlamaConfig, LlamaForCausalLM

    student = pair[0]
    cfg = LlamaConfig(vocab_size=student.config.vocab_size + 16, hidden_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, intermediate_size=32)  # fmt: skip
    with pytest.raises(BadInput, match=r"teacher's vocabulary \(\d+ tokens\) differs"):
        distill.check_vocab(student, LlamaForCausalLM(cfg), "/teacher")
    distill.check_vocab(student, pair[1], "/teacher")  # same tokenizer: fine


def test_config_maps_onto_trl(tmp_path):
    args = distill.distill_args(
        TrainArgs(lr=1e-4, batch_size=2),
        DistillOptions(beta=1.0, max_new_tokens=12, think=False),
        tmp_path,
    )
    assert (args.beta, args.max_completion_length, args.learning_rate) == (1.0, 12, 1e-4)
    assert args.chat_template_kwargs == {"enable_thinking": False}
    assert not args.bf16 and not args.activation_checkpointing and not args.shuffle_dataset
    assert DistillOptions().template_kwargs() == {}
