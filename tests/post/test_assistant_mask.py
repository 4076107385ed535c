"""Assistant-only loss masks, with and without {% generation %} markers in the template:
exactly the assistant's output (and its end-of-turn token) is trained, never the prompt the
model is given at inference (the no_think generation prompt's empty think block included)."""

import pytest

from llmforge.post import assistant_mask, chat_data
from tests import byo_models


def trained(tok, enc) -> list[str]:
    """The trained spans of one tokenized row, decoded, in order."""
    spans, current = [], []
    for token, m in zip(enc["input_ids"], enc["assistant_masks"]):
        if m:
            current.append(token)
        elif current:
            spans, current = spans + [tok.decode(current)], []
    return spans + ([tok.decode(current)] if current else [])


def two_turns(mode=None, reasoning="r2"):
    row = {"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "What is 1 + 1?"},
        {"role": "assistant", "content": "2", "reasoning": "r1"},
        {"role": "user", "content": "And 2 + 2?"},
        {"role": "assistant", "content": "4", "reasoning": reasoning}]}  # fmt: skip
    return {**row, "mode": mode} if mode else row


@pytest.fixture(scope="module")
def toks():
    return {name: byo_models.tokenizer(name) for name in ("qwen3", "llama", "mistral")}


def test_prefix_rendering_finds_turns_in_a_template_without_markers(toks):
    tok = toks["qwen3"]  # re-renders history: old turns lose their think block
    assert not assistant_mask.has_generation_markers(tok)
    think = chat_data.tokenize_chat(two_turns("think"), tok)
    assert trained(tok, think) == ["2<|im_end|>", "<think>\nr2\n</think>\n\n4<|im_end|>"]
    no_think = chat_data.tokenize_chat(two_turns("no_think", reasoning=None), tok)
    assert trained(tok, no_think) == ["2<|im_end|>", "4<|im_end|>"]  # not the empty block
    whole = tok.apply_chat_template(chat_data.to_trl_chat(two_turns("think"))["messages"],
                                    tokenize=True, return_dict=True, enable_thinking=True)  # fmt: skip
    assert think["input_ids"] == list(whole["input_ids"])  # the template's own tokens


def test_prefix_rendering_on_templates_with_no_assistant_header(toks):
    tok = toks["mistral"]  # the answer follows [/INST] directly and ends in eos
    enc = chat_data.tokenize_chat(two_turns(), tok)
    assert trained(tok, enc) == [" 2</s>", " 4</s>"]


def test_markers_are_used_when_the_template_has_them(toks):
    tok = toks["llama"]
    assert assistant_mask.has_generation_markers(tok)
    enc = chat_data.tokenize_chat(two_turns(), tok)
    assert trained(tok, enc) == ["2<|eot_id|>", "4<|eot_id|>"]


def test_both_ways_agree_on_llmforge_template(tiny_tokenizer_dir):
    """The project template with its markers, and the same template stripped of them."""
    from transformers import AutoTokenizer

    marked = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    plain = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    plain.chat_template = (marked.chat_template.replace("{% generation %}", "")
                           .replace("{% endgeneration %}", ""))  # fmt: skip
    assert not assistant_mask.has_generation_markers(plain)
    for mode in ("think", "no_think", None):
        row = {"mode": mode, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "What is 1 + 1?"},
            {"role": "assistant", "content": "\\boxed{2}", "reasoning": "one and one"}]}  # fmt: skip
        a, b = chat_data.tokenize_chat(row, marked), chat_data.tokenize_chat(row, plain)
        assert a == b and sum(a["assistant_masks"]) > 3


def test_plain_prompt_completion_rows_train_the_completion_and_eos(toks):
    tok = toks["llama"]
    enc = chat_data.tokenize_chat({"prompt": "1 + 1 =", "completion": " 2"}, tok)
    assert tok.decode(enc["input_ids"]) == "1 + 1 = 2<|eot_id|>"
    assert trained(tok, enc) == [" 2<|eot_id|>"]


def test_templates_prefix_rendering_cannot_read_say_so(tiny_tokenizer_dir):
    """llmforge's own template without its markers draws the think block on the last
    assistant turn only, so a turn renders differently once another follows."""
    from transformers import AutoTokenizer

    from llmforge.errors import BadInput

    plain = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    plain.chat_template = plain.chat_template.replace("{% generation %}", "").replace(
        "{% endgeneration %}", ""
    )
    with pytest.raises(BadInput, match="renders earlier turns differently.*sft.loss_on=all"):
        chat_data.tokenize_chat(two_turns("think"), plain)
    strict = byo_models.tokenizer("llama")
    strict.chat_template = ("{% if messages[0]['role'] == 'system' %}"
                            "{{ raise_exception('System role not supported') }}{% endif %}")  # fmt: skip
    with pytest.raises(BadInput, match="refuses row r7: System role not supported"):
        chat_data.tokenize_chat({**two_turns(), "id": "r7"}, strict)
