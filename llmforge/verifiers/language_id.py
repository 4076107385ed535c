"""Which language a response is written in, by a script rule and common function words.

The repo's fastText language ID (llmforge/dedup/langid.py) needs a model file this machine
cannot download and the `fasttext` package, so instruction-following checks use a rule
that needs neither:

1. Script: at least `min_share` of the letters must be in the language's script (Unicode
   script names as `form.letter_script` gives them: LATIN, CYRILLIC, CJK, ...).
2. Latin-script languages share a script, so among them the target must also have the
   most hits on a short list of its common function words ("the", "und", "les", ...).
   A text with none of those words passes on its script alone.

It tells English from French or German in a few sentences, and Russian from Greek from
Chinese in a word; it cannot tell apart languages it has no word list for.
"""

from __future__ import annotations

import re

from llmforge.verifiers.form import letter_script

SCRIPTS: dict[str, tuple[str, ...]] = {
    "en": ("LATIN",), "fr": ("LATIN",), "de": ("LATIN",), "es": ("LATIN",),
    "it": ("LATIN",), "pt": ("LATIN",), "nl": ("LATIN",),
    "ru": ("CYRILLIC",), "uk": ("CYRILLIC",), "el": ("GREEK",), "ar": ("ARABIC",),
    "he": ("HEBREW",), "hi": ("DEVANAGARI",), "th": ("THAI",), "ko": ("HANGUL",),
    "zh": ("CJK",), "ja": ("HIRAGANA", "KATAKANA", "CJK"),
}  # fmt: skip

FUNCTION_WORDS: dict[str, frozenset[str]] = {
    lang: frozenset(words.split())
    for lang, words in {
        "en": "the and is are of to that it with for this was you not have be",
        "fr": "le la les et est des une dans que pour avec pas du sur ce qui",
        "de": "der die das und ist nicht ein eine mit auf für ich sich zu den",
        "es": "el los las y es una por con para del muy pero está como su",
        "it": "il lo gli e è di che una per con non sono della nel anche",
        "pt": "o os e é de que uma não com para em do da mais são",
        "nl": "de het een en is van niet op met voor zijn dat ik te ook",
    }.items()
}

_WORD = re.compile(r"[^\W\d_]+")


def script_share(text: str, lang: str) -> float:
    """Share of the letters of `text` written in `lang`'s script (1.0 without letters)."""
    scripts = [s for s in map(letter_script, text) if s is not None]
    if not scripts:
        return 1.0
    wanted = SCRIPTS[lang]
    return sum(s in wanted for s in scripts) / len(scripts)


def function_word_hits(text: str) -> dict[str, int]:
    """How many words of `text` are on each language's function-word list."""
    words = [w.lower() for w in _WORD.findall(text)]
    return {lang: sum(w in vocab for w in words) for lang, vocab in FUNCTION_WORDS.items()}


def is_language(text: str, lang: str, min_share: float = 0.8) -> bool:
    """Whether `text` reads as language `lang` (an ISO 639-1 code from `SCRIPTS`)."""
    if lang not in SCRIPTS:
        raise ValueError(f"unknown language {lang!r}; known: {', '.join(sorted(SCRIPTS))}")
    if script_share(text, lang) < min_share:
        return False
    if lang not in FUNCTION_WORDS:
        return True
    hits = function_word_hits(text)
    return hits[lang] >= max(hits.values())
