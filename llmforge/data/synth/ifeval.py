"""Procedural instruction-following prompts (IFEval style), checked by the `ifeval` verifier.

Each prompt is a writing task on a topic plus one to three constraints drawn from the
makers below, with conflicting ones kept apart (no "all lowercase" next to "all capitals",
no JSON next to bullet points). A maker returns the constraint for the verifier
(llmforge/verifiers/ifeval.py) and the sentence that asks for it. Everything is generated
here; nothing is downloaded.

Splits: a prompt's split (train, rl or eval, 80/10/10) is a hash of its canonical key
(task, topic and constraints), as for the math problems (`splits.py`), so the held-out
eval prompts never appear in RL or training prompts, for any seed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from llmforge.data.synth.splits import SPLITS, split_of
from llmforge.data.synth.tasks import task_row

TASKS = (
    "Write a short story about {topic}.",
    "Describe {topic} to a ten-year-old.",
    "Write a blog post about {topic}.",
    "Explain why {topic} matters to people.",
    "Write a poem about {topic}.",
    "Write a letter to a friend about {topic}.",
    "Give practical advice about {topic}.",
    "Write a product pitch inspired by {topic}.",
)
TOPICS = (
    "a lighthouse keeper", "the first day of school", "a rainy harbour town", "learning to swim",
    "an old bicycle", "the night sky", "a village bakery", "moving to a new city", "honey bees",
    "a chess tournament", "winter mornings", "a lost umbrella", "the history of maps",
    "a mountain train", "keeping a garden", "a street musician", "rivers and bridges",
    "a library at midnight", "saving money", "a family recipe", "the ocean tides",
    "a broken clock", "volunteering", "a desert road trip", "the smell of rain",
    "a small robot", "sleeping well", "a market on Sunday", "writing letters by hand",
    "an abandoned castle",
)  # fmt: skip
KEYWORDS = ("window", "silver", "promise", "journey", "lantern", "whisper", "harvest", "orbit")
FORBIDDEN = ("very", "really", "thing", "good", "nice", "just")
LETTERS = "aeinorst"
LANGUAGES = {"fr": "French", "de": "German", "es": "Spanish", "it": "Italian",
             "ru": "Russian", "zh": "Chinese"}  # fmt: skip
END_PHRASES = ("Is there anything else I can help with?", "Thank you for reading.")
CHOICES = ["My answer is yes.", "My answer is no.", "My answer is maybe."]

Made = tuple[dict, str]  # (constraint for the verifier, the sentence asking for it)
MAKERS: dict[str, tuple[frozenset[str], Callable[[random.Random], Made]]] = {}


def maker(*tags: str):
    """Register a constraint maker; two makers that share a tag never go in one prompt."""

    def wrap(fn: Callable[[random.Random], Made]):
        MAKERS[fn.__name__] = (frozenset(tags), fn)
        return fn

    return wrap


def _quoted(words: list[str], sep: str = " and ") -> str:
    return sep.join(f'"{w}"' for w in words)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _bounded(kind: str, n: int, what: str, rng: random.Random, **extra) -> Made:
    if rng.random() < 0.5:
        return {"type": kind, **extra, "min": n}, f"{what} at least {n} times."
    return {"type": kind, **extra, "max": n}, f"{what} at most {n} times."


@maker("length")
def length(rng: random.Random) -> Made:
    unit, (few, many) = rng.choice([("words", (20, 200)), ("sentences", (2, 8))])
    n = rng.randint(few, many)
    if rng.random() < 0.5:
        return {"type": unit, "max": n}, f"Answer in at most {n} {unit}."
    return {"type": unit, "min": n}, f"Answer in at least {n} {unit}."


@maker("layout")
def paragraphs(rng: random.Random) -> Made:
    n = rng.randint(2, 4)
    return (
        {"type": "paragraphs", "count": n, "divider": "***"},
        f"Write exactly {n} paragraphs, separated by the markdown divider ***.",
    )


@maker("layout")
def bullets(rng: random.Random) -> Made:
    n = rng.randint(2, 5)
    text = f'Use exactly {n} bullet points, each on its own line starting with "* ".'
    return {"type": "bullets", "count": n}, text


@maker("layout", "start", "end", "markup", "case")
def json_answer(rng: random.Random) -> Made:
    if rng.random() < 0.5:
        return {"type": "json"}, "Wrap your entire answer in JSON."
    schema = {
        "type": "object",
        "required": ["title", "body"],
        "properties": {"title": {"type": "string"}, "body": {"type": "string"}},
    }
    text = 'Answer with a JSON object holding a string "title" and a string "body".'
    return {"type": "json", "schema": schema}, text


@maker("layout", "case")
def sections(rng: random.Random) -> Made:
    n = rng.randint(2, 4)
    text = (
        f"Divide your answer into {n} sections, each starting with SECTION X "
        "(SECTION 1, SECTION 2, ...)."
    )
    return {"type": "sections", "min": n}, text


@maker("layout", "start", "end")
def two_responses(rng: random.Random) -> Made:
    return {
        "type": "two_responses"
    }, "Give two different answers, separated by six asterisks: ******."


@maker("markup")
def title(rng: random.Random) -> Made:
    return {"type": "title"}, "Give your answer a title in double angular brackets, like <<title>>."


@maker("highlights")
def highlights(rng: random.Random) -> Made:
    n = rng.randint(1, 3)
    text = f"Highlight at least {_count(n, 'part')} of your answer with markdown, like *this part*."
    return {"type": "highlights", "min": n}, text


@maker("placeholders")
def placeholders(rng: random.Random) -> Made:
    n = rng.randint(1, 3)
    text = f"Include at least {_count(n, 'placeholder')} in square brackets, such as [name]."
    return {"type": "placeholders", "min": n}, text


@maker("case", "english")
def letter_case(rng: random.Random) -> Made:
    pick = rng.randrange(3)
    if pick == 0:
        return {"type": "lowercase"}, "Write your entire answer in lowercase letters; no capitals."
    if pick == 1:
        return {"type": "uppercase"}, "Write your entire answer in English capital letters."
    return _bounded("capital_words", rng.randint(2, 6), "Use words in all capital letters", rng)


@maker("keywords", "english")
def keywords(rng: random.Random) -> Made:
    words = rng.sample(KEYWORDS, rng.randint(1, 2))
    return {"type": "keywords", "words": words}, f"Include the keywords {_quoted(words)}."


@maker("forbidden", "english")
def forbidden(rng: random.Random) -> Made:
    words = rng.sample(FORBIDDEN, rng.randint(1, 2))
    return {"type": "forbidden", "words": words}, f"Do not use the words {_quoted(words)}."


@maker("frequency", "english")
def frequency(rng: random.Random) -> Made:
    if rng.random() < 0.5:
        word = rng.choice(KEYWORDS)
        return _bounded("keyword_frequency", rng.randint(2, 4), f'Use the word "{word}"', rng,
                        word=word)  # fmt: skip
    letter = rng.choice(LETTERS)
    return _bounded("letter_frequency", rng.randint(5, 20), f'Use the letter "{letter}"', rng,
                    letter=letter)  # fmt: skip


@maker("english", "case", "start", "end")
def language(rng: random.Random) -> Made:
    code = rng.choice(sorted(LANGUAGES))
    text = f"Your entire answer must be in {LANGUAGES[code]}; no other language is allowed."
    return {"type": "language", "lang": code}, text


@maker("end", "case", "english")
def ends_with(rng: random.Random) -> Made:
    phrase = rng.choice(END_PHRASES)
    text = f'Finish your answer with the exact phrase "{phrase}", with nothing after it.'
    return {"type": "ends_with", "phrase": phrase}, text


@maker("end", "case", "english")
def choice(rng: random.Random) -> Made:
    text = f"End by giving your opinion in exactly one of these phrases: {_quoted(CHOICES, ', ')}."
    return {"type": "choice", "options": list(CHOICES)}, text


@maker("start", "end")
def quoted(rng: random.Random) -> Made:
    return {"type": "quoted"}, "Wrap your entire answer in double quotation marks."


@maker("end", "case")
def postscript(rng: random.Random) -> Made:
    marker = rng.choice(["P.S.", "P.P.S"])
    text = f"At the end of your answer, add a postscript starting with {marker}."
    return {"type": "postscript", "marker": marker}, text


@maker("comma")
def no_comma(rng: random.Random) -> Made:
    return {"type": "no_comma"}, "Do not use any commas in your answer."


def draw_constraints(rng: random.Random, k: int, used: frozenset[str] = frozenset()) -> list[Made]:
    """`k` constraints whose tags overlap neither each other nor `used` (fewer if the
    makers run out)."""
    names = list(MAKERS)
    rng.shuffle(names)
    taken, out = set(used), []
    for name in names:
        tags, make = MAKERS[name]
        if tags & taken:
            continue
        taken |= tags
        out.append(make(rng))
        if len(out) == k:
            break
    return out


def make_prompt(rng: random.Random) -> tuple[str, list[dict], str]:
    """(prompt text, constraints, canonical key) of one random prompt; one in ten first asks
    for the request to be repeated word for word."""
    task = rng.choice(TASKS).format(topic=rng.choice(TOPICS))
    made: list[Made] = []
    if rng.random() < 0.1:
        repeat = {"type": "repeat_prompt", "text": task}
        made.append((repeat, "First repeat the request word for word, then answer."))
    k = rng.choices((1, 2, 3), weights=(0.4, 0.4, 0.2))[0]
    made += draw_constraints(rng, k, frozenset({"start", "case"}) if made else frozenset())
    constraints = [c for c, _ in made]
    prompt = " ".join([task, *(text for _, text in made)])
    return prompt, constraints, json.dumps([task, constraints], sort_keys=True)


def ifeval_tasks(n: int, split: str = "rl", *, seed: int = 0, prefix: str = "ifeval") -> list[dict]:
    """`n` distinct instruction-following task rows of `split` ('train', 'rl' or 'eval').

    The same (n, split, seed) gives the same rows; rows of different splits never share a
    prompt.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    rng = random.Random(f"ifeval-{split}-{seed}")
    rows, seen = [], set()
    for _ in range(200 * n + 1000):
        prompt, constraints, key = make_prompt(rng)
        if key in seen or split_of(key) != split:
            continue
        seen.add(key)
        row = task_row(f"{prefix}-{split}-{len(rows):05d}", prompt, None, "ifeval")
        rows.append({**row, "constraints": constraints})
        if len(rows) == n:
            return rows
    raise ValueError(f"could not draw {n} distinct {split} instruction-following prompts")
