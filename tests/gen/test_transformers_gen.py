"""TransformersGenerator: shapes, chat prompts, seeds, stop handling and logprobs."""

import pytest
import torch

from llmforge.gen import TransformersGenerator

CHAT = [{"role": "user", "content": "the king and the queen"}]


@pytest.fixture(scope="module")
def gen(tiny_model):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run fastest on one thread
    yield TransformersGenerator.from_pretrained(str(tiny_model), batch_size=8)
    torch.set_num_threads(before)


def test_shapes_and_finish_reasons(gen):
    out = gen.generate(["the king", CHAT, "love"], n=3, max_new_tokens=6, seed=1)
    assert [len(group) for group in out] == [3, 3, 3]
    for group in out:
        for c in group:
            assert 1 <= len(c.token_ids) <= 6 and len(c.logprobs) == len(c.token_ids)
            assert c.finish_reason in ("stop", "length")
            assert (c.finish_reason == "length") == (c.token_ids[-1] not in gen.stop_ids)
            assert all(lp <= 0 for lp in c.logprobs)


def test_chat_prompt_uses_template(gen):
    ((c,),) = gen.generate([CHAT], n=1, max_new_tokens=2)
    rendered = gen.tokenizer.decode(c.prompt_token_ids)
    assert "<|im_start|>user\nthe king and the queen<|im_end|>" in rendered
    assert "<|im_start|>assistant" in rendered


def test_seed_reproducible_and_rng_untouched(gen):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = gen.generate(["the king"], n=4, max_new_tokens=8, seed=7)
    assert torch.rand(1) == before  # the caller's global RNG stream is unchanged
    b = gen.generate(["the king"], n=4, max_new_tokens=8, seed=7)
    c = gen.generate(["the king"], n=4, max_new_tokens=8, seed=8)
    ids = lambda out: [x.token_ids for x in out[0]]  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)


def test_logprobs_match_a_forward_pass(gen):
    ((c,),) = gen.generate(["the queen"], n=1, max_new_tokens=5, temperature=0.7, seed=3)
    ids = torch.tensor([c.prompt_token_ids + c.token_ids])
    with torch.no_grad():
        logits = gen.model(ids).logits[0, len(c.prompt_token_ids) - 1 : -1].float()
    expected = torch.log_softmax(logits / 0.7, -1).gather(-1, ids[0, -len(c.token_ids) :, None])
    assert torch.allclose(torch.tensor(c.logprobs), expected.squeeze(-1), atol=1e-4)


def test_stop_token_ends_completion(gen):
    gen_all_stop = TransformersGenerator(gen.model, gen.tokenizer)
    gen_all_stop.stop_ids = list(range(len(gen.tokenizer)))  # every token is a stop token
    ((c,),) = gen_all_stop.generate(["the"], n=1, max_new_tokens=5)
    assert c.finish_reason == "stop" and len(c.token_ids) == 1 and c.text == ""


def test_greedy_left_padding_matches_unbatched(gen):
    prompts = ["the king and the queen of the night", "rose"]
    batched = gen.generate(prompts, n=1, temperature=0.0, max_new_tokens=5)
    single = [gen.generate([p], n=1, temperature=0.0, max_new_tokens=5)[0] for p in prompts]
    assert [g[0].token_ids for g in batched] == [s[0].token_ids for s in single]
