"""Planted duplicates, so the dedup stage has real work and its precision can be measured.

Four kinds, each recorded with the id of the planted document:

- ``exact``: a verbatim copy of another document (``of`` names it);
- ``near``: a copy with about one word in a hundred replaced (``of`` names the source);
- ``repetitive``: an existing document (same id) into which one word has been inserted
  48 times in a row (a one-token span repeated);
- ``contaminated``: an existing training document (same id) with a held-out eval item
  and its solution pasted in (``eval_id`` names the item).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

_FILLERS = ("indeed", "truly", "anon", "perchance", "verily", "forsooth", "marry", "alas")
# Single words, so each burst is a one-token span repeated (the dedup repetition filter's case).
_SPANS = ("ho", "la", "nay", "hey", "fie", "O")


@dataclass(frozen=True)
class PlantCounts:
    """How many documents of each kind to plant per domain that supports it."""

    exact: int = 2
    near: int = 2
    repetitive: int = 1
    contaminated: int = 2


def near_copy(text: str, rng: random.Random, rate: float = 0.01) -> str:
    """`text` with about `rate` of its words replaced by filler words (at least one)."""
    pieces = re.split(r"(\s+)", text)
    words = [i for i, piece in enumerate(pieces) if piece and not piece.isspace()]
    for i in rng.sample(words, max(1, round(len(words) * rate))):
        pieces[i] = rng.choice([f for f in _FILLERS if f != pieces[i]])
    return "".join(pieces)


def repetitive_text(text: str, rng: random.Random, repeats: int = 48) -> str:
    """`text` with one word repeated `repeats` times inserted at a paragraph break."""
    span = rng.choice(_SPANS)
    burst = " ".join([span] * repeats)
    paragraphs = text.split("\n\n")
    at = rng.randint(1, max(1, len(paragraphs) - 1))
    return "\n\n".join(paragraphs[:at] + [burst] + paragraphs[at:])


def plant_copies(
    docs: list[dict], rng: random.Random, counts: PlantCounts, prefix: str
) -> tuple[list[dict], dict[str, list[dict]]]:
    """Plant duplicates among `docs`; returns (new documents, records per kind).

    Exact and near copies are new documents. Repetitive documents replace their source in
    `docs` (same id), so they are not also near-copies of an original.
    """
    total = counts.exact + counts.near + counts.repetitive
    picks = rng.sample(range(len(docs)), total)
    kinds = ["exact"] * counts.exact + ["near"] * counts.near + ["repetitive"] * counts.repetitive
    new, records = [], {"exact": [], "near": [], "repetitive": []}
    for kind, index in zip(kinds, picks, strict=True):
        source = docs[index]
        if kind == "repetitive":
            docs[index] = {**source, "text": repetitive_text(source["text"], rng)}
            records[kind].append({"id": source["id"]})
            continue
        doc_id = f"{prefix}-planted-{len(new):04d}"
        text = source["text"] if kind == "exact" else near_copy(source["text"], rng)
        new.append({"id": doc_id, "text": text, "domain": source["domain"]})
        records[kind].append({"id": doc_id, "of": source["id"]})
    return new, records


def contaminate(doc: dict, eval_text: str) -> dict:
    """`doc` (kept under its id) with `eval_text` appended as its next numbered problem."""
    number = doc["text"].count("\nProblem ") + doc["text"].startswith("Problem ") + 1
    text = doc["text"].rstrip("\n") + f"\n\nProblem {number}: {eval_text}\n"
    return {**doc, "text": text}


def interleave(docs: list[dict], planted: list[dict], rng: random.Random) -> list[dict]:
    """Insert `planted` documents at seeded positions among `docs`."""
    out = list(docs)
    for doc in planted:
        out.insert(rng.randint(0, len(out)), doc)
    return out
