"""Verifiable instruction following (IFEval style): constraint checks on a response.

A task row with `"verifier": "ifeval"` carries its constraints in a `constraints` list,
each `{"type": NAME, ...options}`::

    {"id": "if-1", "prompt": "Write about rivers. Use at most 40 words and no commas.",
     "verifier": "ifeval", "chat": true, "reference": null,
     "constraints": [{"type": "words", "max": 40}, {"type": "no_comma"}]}

`CHECKS` maps each type to its check and its options (`docs/rewards.md` lists them). The
`ifeval` reward scores the share of constraints a response follows (instruction-level
accuracy) or, with `partial=false`, 1 only when it follows all of them (prompt-level
strict accuracy, which eval reports as `correct`). Only the text after the reasoning
block is checked. Always parseable: an ignored instruction is a failure, not a missing
answer, so RL still learns from it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from llmforge.errors import BadInput
from llmforge.verifiers.answer import answer_text
from llmforge.verifiers.base import Reward, Score, register
from llmforge.verifiers.language_id import SCRIPTS, is_language

_WORD = re.compile(r"\b\w+(?:['’-]\w+)*\b")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_BULLET = re.compile(r"^\s*[*-]\s+\S", re.M)
_HIGHLIGHT = re.compile(r"(?<!\*)\*[^\n*]+\*(?!\*)")
_TITLE = re.compile(r"<<[^\n<>]+>>")
_PLACEHOLDER = re.compile(r"\[[^\[\]\n]+\]")
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.S)


def words(text: str) -> list[str]:
    """The words of a text (letters, digits, inner apostrophes and hyphens)."""
    return _WORD.findall(text)


def sentences(text: str) -> list[str]:
    """Sentences split after `.`, `!` or `?` followed by whitespace."""
    return [s for s in _SENTENCE_END.split(text.strip()) if words(s)]


def paragraphs(text: str, divider: str = "") -> list[str]:
    """Non-empty paragraphs, split by blank lines or by lines holding only `divider`."""
    if divider:
        parts = re.split(rf"^\s*{re.escape(divider)}\s*$", text, flags=re.M)
    else:
        parts = re.split(r"\n\s*\n", text)
    return [p.strip() for p in parts if p.strip()]


def _within(n: int, lo: int | None, hi: int | None) -> bool:
    return (lo is None or n >= lo) and (hi is None or n <= hi)


def _has_word(text: str, word: str) -> int:
    return len(re.findall(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.I))


# ---------------------------------------------------------------- JSON


def parse_json(text: str):
    """The JSON value a response holds (bare or in one ``` fence); ValueError if none."""
    body = text.strip()
    fenced = _FENCE.match(body)
    return json.loads(fenced.group(1) if fenced else body)


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "number": (int, float),
    "integer": int,
}


def schema_errors(value, schema: Mapping, where: str = "$") -> list[str]:
    """Where `value` breaks `schema`, a small JSON Schema subset: type, enum, properties,
    required, additionalProperties (bool), items, minItems, maxItems.

    Hand-written: `jsonschema` is not a dependency here (it pulls in a compiled
    extension), and a response schema needs only these keywords.
    """
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(value, _TYPES[kind]) and not (
            kind in ("number", "integer") and isinstance(value, bool)
        )
        if not ok:
            return [f"{where}: expected {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: not one of {schema['enum']}"]
    errors: list[str] = []
    if isinstance(value, dict):
        errors += [f"{where}: missing '{k}'" for k in schema.get("required", []) if k not in value]
        props = schema.get("properties", {})
        for key, item in value.items():
            if key in props:
                errors += schema_errors(item, props[key], f"{where}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: unexpected '{key}'")
    if isinstance(value, list):
        if not _within(len(value), schema.get("minItems"), schema.get("maxItems")):
            errors.append(f"{where}: {len(value)} items")
        for i, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", {}), f"{where}[{i}]")
    return errors


def _json_ok(text: str, schema: Mapping | None = None) -> bool:
    try:
        value = parse_json(text)
    except ValueError:
        return False
    return not schema or not schema_errors(value, schema)


# ---------------------------------------------------------------- the checks


def _sections(text: str, min: int, marker: str = "SECTION") -> bool:
    found = re.findall(rf"^\s*{re.escape(marker)}\s+\d+", text, flags=re.M)
    return len(found) >= min


def _first_word(text: str, paragraph: int, word: str) -> bool:
    paras = paragraphs(text)
    if len(paras) < paragraph:
        return False
    first = words(paras[paragraph - 1])
    return bool(first) and first[0].lower() == word.lower()


def _two_responses(text: str) -> bool:
    parts = [p.strip() for p in text.split("******")]
    return len(parts) == 2 and all(parts) and parts[0] != parts[1]


def _caps_words(text: str) -> int:
    return sum(w.isupper() for w in words(text) if len(w) > 1)


@dataclass(frozen=True)
class Check:
    """One constraint type: its test and its options (name -> (type, required))."""

    test: Callable[..., bool]
    options: Mapping[str, tuple[type | tuple[type, ...], bool]]
    bounded: bool = False  # needs at least one of min/max


_RANGE = {"min": (int, False), "max": (int, False)}
_STRS = (list, True)

CHECKS: dict[str, Check] = {
    "words": Check(lambda t, min=None, max=None: _within(len(words(t)), min, max), _RANGE, True),
    "sentences": Check(
        lambda t, min=None, max=None: _within(len(sentences(t)), min, max), _RANGE, True
    ),
    "paragraphs": Check(
        lambda t, count, divider="": len(paragraphs(t, divider)) == count,
        {"count": (int, True), "divider": (str, False)},
    ),
    "first_word": Check(_first_word, {"paragraph": (int, True), "word": (str, True)}),
    "bullets": Check(lambda t, count: len(_BULLET.findall(t)) == count, {"count": (int, True)}),
    "json": Check(_json_ok, {"schema": (dict, False)}),
    "highlights": Check(lambda t, min: len(_HIGHLIGHT.findall(t)) >= min, {"min": (int, True)}),
    "sections": Check(_sections, {"min": (int, True), "marker": (str, False)}),
    "title": Check(lambda t: bool(_TITLE.search(t)), {}),
    "choice": Check(lambda t, options: sum(o in t for o in options) == 1, {"options": _STRS}),
    "lowercase": Check(lambda t: t == t.lower() and any(c.isalpha() for c in t), {}),
    "uppercase": Check(lambda t: t == t.upper() and any(c.isalpha() for c in t), {}),
    "capital_words": Check(
        lambda t, min=None, max=None: _within(_caps_words(t), min, max), _RANGE, True
    ),
    "keywords": Check(lambda t, words: all(_has_word(t, w) for w in words), {"words": _STRS}),
    "forbidden": Check(lambda t, words: not any(_has_word(t, w) for w in words), {"words": _STRS}),
    "keyword_frequency": Check(
        lambda t, word, min=None, max=None: _within(_has_word(t, word), min, max),
        {"word": (str, True), **_RANGE},
        True,
    ),
    "letter_frequency": Check(
        lambda t, letter, min=None, max=None: _within(t.lower().count(letter.lower()), min, max),
        {"letter": (str, True), **_RANGE},
        True,
    ),
    "language": Check(lambda t, lang: is_language(t, lang), {"lang": (str, True)}),
    "starts_with": Check(
        lambda t, phrase: t.strip().lower().startswith(phrase.strip().lower()),
        {"phrase": (str, True)},
    ),
    "ends_with": Check(
        lambda t, phrase: t.strip().lower().endswith(phrase.strip().lower()),
        {"phrase": (str, True)},
    ),
    "quoted": Check(lambda t: len(t.strip()) > 1 and t.strip()[0] == t.strip()[-1] == '"', {}),
    "placeholders": Check(lambda t, min: len(_PLACEHOLDER.findall(t)) >= min, {"min": (int, True)}),
    "postscript": Check(
        lambda t, marker="P.S.": bool(re.search(rf"^\s*{re.escape(marker)}", t, re.M | re.I)),
        {"marker": (str, False)},
    ),
    "no_comma": Check(lambda t: "," not in t, {}),
    "repeat_prompt": Check(
        lambda t, text: t.strip().lower().startswith(text.strip().lower()), {"text": (str, True)}
    ),
    "two_responses": Check(_two_responses, {}),
}


def constraint_error(constraint: object) -> str | None:
    """Why a constraint is malformed (unknown type, missing or bad option), or None."""
    if not isinstance(constraint, dict) or not isinstance(constraint.get("type"), str):
        return "each constraint must be an object with a 'type' string"
    kind = constraint["type"]
    if kind not in CHECKS:
        return f"unknown constraint type '{kind}' (known: {', '.join(sorted(CHECKS))})"
    check = CHECKS[kind]
    opts = {k: v for k, v in constraint.items() if k != "type"}
    unknown = sorted(opts.keys() - check.options.keys())
    if unknown:
        return (
            f"constraint '{kind}' has no option '{unknown[0]}' (options: {sorted(check.options)})"
        )
    for name, (kind_of, required) in check.options.items():
        if name not in opts:
            if required:
                return f"constraint '{kind}' needs option '{name}'"
            continue
        if not isinstance(opts[name], kind_of) or isinstance(opts[name], bool):
            return f"constraint '{kind}': option '{name}' has the wrong type"
    if check.bounded and opts.get("min") is None and opts.get("max") is None:
        return f"constraint '{kind}' needs 'min' or 'max'"
    if kind == "language" and opts["lang"] not in SCRIPTS:
        return f"constraint 'language': unknown lang '{opts['lang']}' (known: {sorted(SCRIPTS)})"
    return None


def constraints_error(value: object) -> str | None:
    """Why a row's `constraints` field is malformed, or None."""
    if not isinstance(value, list) or not value:
        return "an 'ifeval' row needs a non-empty 'constraints' list"
    for i, constraint in enumerate(value):
        error = constraint_error(constraint)
        if error:
            return f"constraints[{i}]: {error}"
    return None


def follows(text: str, constraint: Mapping) -> bool:
    """Whether `text` follows one (well-formed) constraint."""
    options = {k: v for k, v in constraint.items() if k != "type"}
    return bool(CHECKS[constraint["type"]].test(text, **options))


@register("ifeval")
class InstructionFollowing(Reward):
    """Share of the sample's `constraints` the response follows (all-or-nothing with
    `partial=False`); `parts` holds each constraint's verdict, keyed `i:type`."""

    def __init__(self, partial: bool = True):
        self.partial = partial

    def __call__(self, completion: str, sample: Mapping, length: int | None = None) -> Score:
        constraints = sample.get("constraints")
        error = constraints_error(constraints)
        if error:
            raise BadInput(f"task {sample.get('id', '?')}: {error}")
        text = answer_text(completion).strip()
        verdicts = {f"{i}:{c['type']}": float(follows(text, c)) for i, c in enumerate(constraints)}
        share = sum(verdicts.values()) / len(verdicts)
        value = share if self.partial else float(share == 1.0)
        return Score(value, parseable=True, parts=verdicts)
