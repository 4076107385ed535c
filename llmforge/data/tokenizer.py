"""Tokenizers: train a byte-level BPE, or adopt an existing one, and save it so that
`transformers.AutoTokenizer.from_pretrained` loads it with our special tokens and the
think/no_think chat template (docs/contract.md)."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from llmforge.errors import BadInput

DOC_SEP = "<|endoftext|>"
SPECIAL_TOKENS = [
    DOC_SEP,
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
]

# SmolLM3-style ChatML template. The mode comes from `enable_thinking` or a trailing
# /think or /no_think in the system prompt; reasoning is kept on the last assistant turn
# only; {% generation %} marks the tokens an assistant-only loss trains on.
CHAT_TEMPLATE = """{%- set ns = namespace(think=true, last=-1, sys='') -%}
{%- if enable_thinking is defined and enable_thinking is not none -%}{%- set ns.think = enable_thinking -%}{%- endif -%}
{%- for m in messages -%}{%- if m['role'] == 'assistant' -%}{%- set ns.last = loop.index0 -%}{%- endif -%}{%- endfor -%}
{%- if messages and messages[0]['role'] == 'system' -%}
{%- set ns.sys = messages[0]['content'] -%}
{%- if ns.sys.endswith('/no_think') -%}{%- set ns.think = false -%}{%- set ns.sys = ns.sys[:-9].rstrip() -%}
{%- elif ns.sys.endswith('/think') -%}{%- set ns.think = true -%}{%- set ns.sys = ns.sys[:-6].rstrip() -%}{%- endif -%}
{%- endif -%}
{%- if ns.sys or tools -%}
{{- '<|im_start|>system\\n' + ns.sys -}}
{%- if tools -%}{{- '\\nTools:\\n' -}}{%- for t in tools -%}{{- t | tojson -}}{{- '\\n' -}}{%- endfor -%}{%- endif -%}
{{- '<|im_end|>\\n' -}}
{%- endif -%}
{%- for m in messages -%}
{%- if m['role'] == 'system' -%}
{%- elif m['role'] == 'assistant' -%}
{{- '<|im_start|>assistant\\n' -}}
{% generation %}
{%- if loop.index0 == ns.last -%}
{%- if ns.think -%}{{- '<think>\\n' + (m.get('reasoning') or '') + '\\n</think>\\n' -}}
{%- else -%}{{- '<think>\\n\\n</think>\\n' -}}{%- endif -%}
{%- endif -%}
{{- m['content'] or '' -}}
{%- for tc in (m.get('tool_calls') or []) -%}{{- '<tool_call>\\n' + (tc | tojson) + '\\n</tool_call>' -}}{%- endfor -%}
{{- '<|im_end|>' -}}
{% endgeneration %}
{{- '\\n' -}}
{%- else -%}
{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\\n' -}}
{%- if not ns.think -%}{{- '<think>\\n\\n</think>\\n' -}}{%- endif -%}
{%- endif -%}"""


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2):
    """Train a byte-level BPE (digits split one by one, as Llama 3 and SmolLM3 do)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_tokenizer_json(path: Path, add_missing: bool = True):
    """A `tokenizers.Tokenizer` from a tokenizer.json, a transformers dir or an artifact.

    `add_missing` adds our special tokens it lacks; off for a model's own tokenizer, whose
    new ids would lie past the model's embedding rows."""
    from tokenizers import Tokenizer

    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise BadInput("no tokenizer.json here", path=str(path))
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a bare Exception on a bad file
        raise BadInput(f"cannot load tokenizer: {e}", path=str(file)) from None
    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing and add_missing:
        tok.add_special_tokens(missing)
    return tok


def document_separator(tok, path: Path) -> int:
    """The id that ends each document in a token store: <|endoftext|>, else the eos token
    of the transformers tokenizer at `path` (Llama 3 has <|end_of_text|>, Mistral </s>)."""
    if tok.token_to_id(DOC_SEP) is not None:
        return tok.token_to_id(DOC_SEP)
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(str(path)).eos_token if Path(path).is_dir() else None
    if eos is None or tok.token_to_id(eos) is None:
        raise BadInput(f"the tokenizer has neither {DOC_SEP} nor an eos token to end documents "
                       "with", path=str(path))  # fmt: skip
    return tok.token_to_id(eos)


def save_for_transformers(tok, out_dir: Path, model_max_length: int = 1 << 17) -> None:
    """Write tokenizer.json plus the config transformers needs, with our chat template."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token=DOC_SEP,
        unk_token=None,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    fast.chat_template = CHAT_TEMPLATE
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    """Copy the files transformers needs to load a tokenizer from `src` into `dst`."""
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
        "chat_template.json",
        "added_tokens.json",
    ):
        if (src / name).is_file():
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, dst / name)
