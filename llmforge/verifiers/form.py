"""Rewards on the shape of a completion: format, language consistency, overlong penalty.

- `format`: half for a well-formed reasoning block (one `<think>` ... `</think>`, in that
  order; the opening tag may sit in the prompt when the chat template emits it), half for
  a final answer in `\\boxed{}` after it. A sample in `no_think` mode (its prompt already
  ends with the empty think block) gets the first half for writing no think tags at all.
  Always parseable: judging answers is the verifiers' job.
- `language`: the share of letters written in the target script (Unicode script name from
  `unicodedata`, LATIN by default or the sample's `script`), a cheap stand-in for the
  language-consistency reward of DeepSeek-R1 that penalises script mixing.
- `overlong`: DAPO's soft overlong punishment: 0 up to `soft_len` tokens, then linear down
  to -1 at `max_len` and beyond.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

from llmforge.errors import BadInput
from llmforge.verifiers.answer import answer_text, last_boxed
from llmforge.verifiers.base import Reward, Score, register


def think_well_formed(completion: str, require: bool = True) -> bool:
    """One closing `</think>`, at most one opening tag before it, nothing nested."""
    opens, closes = completion.count("<think>"), completion.count("</think>")
    if closes == 0:
        return not require and opens == 0
    if closes > 1 or opens > 1:
        return False
    return opens == 0 or completion.index("<think>") < completion.index("</think>")


@register("format")
class Format(Reward):
    """0.5 for well-formed think tags, 0.5 for a boxed final answer after them."""

    def __init__(self, require_think: bool = True):
        self.require_think = require_think

    def __call__(self, completion: str, sample: Mapping, length: int | None = None) -> Score:
        mode = sample.get("mode")
        if mode == "no_think":
            tags = "<think>" not in completion and "</think>" not in completion
        else:  # a row that asks for think mode must think, whatever the default
            tags = think_well_formed(completion, self.require_think or mode == "think")
        boxed = last_boxed(answer_text(completion)) is not None
        return Score(0.5 * tags + 0.5 * boxed)


def letter_script(char: str) -> str | None:
    """The script of a letter ('LATIN', 'CYRILLIC', 'CJK', ...); None for non-letters."""
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0] if name else None


@register("language")
class LanguageConsistency(Reward):
    """Fraction of letters in the target script; 1.0 when there are no letters."""

    def __init__(self, script: str = "LATIN"):
        self.script = script.upper()

    def __call__(self, completion: str, sample: Mapping, length: int | None = None) -> Score:
        target = str(sample.get("script", self.script)).upper()
        scripts = [s for s in map(letter_script, completion) if s is not None]
        if not scripts:
            return Score(1.0)
        return Score(sum(s == target for s in scripts) / len(scripts))


def overlong_penalty(length: int, soft_len: int, max_len: int) -> float:
    """DAPO: 0 for length <= soft_len, linear to -1 at max_len, -1 beyond."""
    if length <= soft_len:
        return 0.0
    if length >= max_len:
        return -1.0
    return -(length - soft_len) / (max_len - soft_len)


@register("overlong")
class Overlong(Reward):
    """The overlong penalty on the completion's token count (words if tokens are unknown)."""

    def __init__(self, soft_len: int = 3072, max_len: int = 4096):
        if not 0 <= soft_len < max_len:
            raise BadInput(f"overlong: need 0 <= soft_len < max_len, got {soft_len}, {max_len}")
        self.soft_len, self.max_len = soft_len, max_len

    def __call__(self, completion: str, sample: Mapping, length: int | None = None) -> Score:
        n = length if length is not None else len(completion.split())
        return Score(overlong_penalty(n, self.soft_len, self.max_len))
