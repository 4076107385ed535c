"""Tiny random checkpoints of stock architectures, as a user would bring them: made with
`save_pretrained` (no llmforge manifest), each with its own BPE tokenizer and chat template.

| name    | class              | chat template                                              |
| ------- | ------------------ | ---------------------------------------------------------- |
| qwen3   | Qwen3ForCausalLM   | ChatML, think blocks after the last user turn, no markers  |
| llama   | LlamaForCausalLM   | Llama 3 headers, with {% generation %} markers             |
| mistral | MistralForCausalLM | [INST] ... [/INST] answer</s>, no markers                  |
| gpt2    | GPT2LMHeadModel    | none (llmforge adds its think/no_think template)           |

The templates are written here for the tests, in the style of the real ones.
"""

from __future__ import annotations

import random
from pathlib import Path

QWEN3_TEMPLATE = """{%- set ns = namespace(last_user=-1) -%}
{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}
{%- for m in messages -%}
{%- if m['role'] == 'assistant' -%}
{{- '<|im_start|>assistant\\n' -}}
{%- if loop.index0 > ns.last_user -%}{{- '<think>\\n' + (m.get('reasoning_content') or '') + '\\n</think>\\n\\n' -}}{%- endif -%}
{{- m['content'] + '<|im_end|>\\n' -}}
{%- else -%}
{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\\n' -}}
{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}
{%- endif -%}"""

LLAMA_TEMPLATE = """{{- bos_token -}}
{%- for m in messages -%}
{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' -}}
{%- if m['role'] == 'assistant' -%}
{% generation %}{{- m['content'] + '<|eot_id|>' -}}{% endgeneration %}
{%- else -%}
{{- m['content'] + '<|eot_id|>' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"""

MISTRAL_TEMPLATE = """{{- bos_token -}}
{%- for m in messages -%}
{%- if m['role'] == 'system' -%}{{- m['content'] + '\\n\\n' -}}
{%- elif m['role'] == 'user' -%}{{- '[INST] ' + m['content'] + ' [/INST]' -}}
{%- elif m['role'] == 'assistant' -%}{{- ' ' + m['content'] + eos_token -}}
{%- endif -%}
{%- endfor -%}"""

SPECIALS = {
    "qwen3": dict(specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
                  eos="<|im_end|>", pad="<|endoftext|>", bos=None, template=QWEN3_TEMPLATE),
    "llama": dict(specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                            "<|end_header_id|>", "<|eot_id|>"],
                  eos="<|eot_id|>", pad=None, bos="<|begin_of_text|>", template=LLAMA_TEMPLATE),
    "mistral": dict(specials=["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
                    eos="</s>", pad=None, bos="<s>", template=MISTRAL_TEMPLATE),
    "gpt2": dict(specials=["<|endoftext|>"], eos="<|endoftext|>", pad=None, bos="<|endoftext|>",
                 template=None),
}  # fmt: skip
ARCHITECTURES = {
    "qwen3": "Qwen3ForCausalLM",
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "gpt2": "GPT2LMHeadModel",
}
WORDS = "what is plus minus the answer so we add take away and get one two three four".split()


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        words = " ".join(rng.choice(WORDS) for _ in range(8))
        lines.append(f"What is {a} + {b}? {words} The answer is \\boxed{{{a + b}}}.")
    return lines


def tokenizer(name: str, vocab_size: int = 320):
    """A byte-level BPE trained on `corpus()`, wrapped for transformers with `name`'s
    special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = SPECIALS[name]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=spec["specials"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=spec["eos"], pad_token=spec["pad"],
        bos_token=spec["bos"], clean_up_tokenization_spaces=False,
    )  # fmt: skip
    if spec["template"]:
        fast.chat_template = spec["template"]
    return fast


def model_config(name: str, tok):
    import transformers

    ids = dict(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    if name == "gpt2":
        return transformers.GPT2Config(
            vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=256, **ids
        )
    common = dict(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, **ids,
    )  # fmt: skip
    if name == "qwen3":
        return transformers.Qwen3Config(head_dim=8, tie_word_embeddings=True, **common)
    if name == "mistral":
        return transformers.MistralConfig(sliding_window=None, **common)
    return transformers.LlamaConfig(tie_word_embeddings=False, **common)


def save_model(name: str, out: Path, seed: int = 0) -> Path:
    """A random `name` checkpoint in `out`, as `save_pretrained` writes it."""
    import torch
    import transformers

    tok = tokenizer(name)
    torch.manual_seed(seed)
    model = getattr(transformers, ARCHITECTURES[name])(model_config(name, tok))
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out
