"""A planted corpus for the dedup tests: clean documents plus known duplicates,
repetitive junk and contaminated documents, each tagged with the reason it must go."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import datatrove

# real English-ish words taken from a source file that is always installed
_WORDS = sorted(
    set(
        re.findall(
            r"\b[a-z]{3,10}\b",
            Path(datatrove.__file__).parent.joinpath("pipeline", "dedup", "minhash.py").read_text(),
        )
    )
)

TOPICS = {
    "bread": "Knead the dough for ten minutes, let it rise in a warm kitchen until it doubles, "
    "then bake the loaf in a hot oven until the crust turns golden brown.",
    "stars": "Astronomers measure the distance to nearby stars with parallax, watching how their "
    "position shifts against distant galaxies as the Earth orbits the Sun.",
    "football": "The striker dribbled past two defenders and curled the ball into the top corner, "
    "and the crowd in the stadium erupted as the home team took the lead.",
    "sailing": "Before leaving the harbour the crew checked the rigging, hoisted the mainsail and "
    "steered the small boat into the wind along the rocky coastline.",
    "bank": "The central bank raised interest rates to slow inflation, making mortgages and "
    "business loans more expensive for households and companies.",
    "garden": "Tomato seedlings need plenty of sunlight, regular watering and a stake to climb, "
    "and pinching off side shoots helps the plants set more fruit.",
}
PARAPHRASES = {
    "bread": "Work the dough by hand for about ten minutes and leave it somewhere warm to rise to "
    "twice its size, then bake the bread in a very hot oven until its crust is golden.",
    "stars": "Using parallax, astronomers find how far away close stars are by observing how they "
    "appear to move against far-off galaxies while our planet travels around the Sun.",
}


def salad(rng: random.Random, n: int = 200) -> str:
    """A clean, unique document: random words in sentences."""
    words = [rng.choice(_WORDS) for _ in range(n)]
    sentences = [" ".join(words[i : i + 12]).capitalize() + "." for i in range(0, n, 12)]
    return " ".join(sentences)


def near_copy(rng: random.Random, text: str, edits: int = 2) -> str:
    """The same text with a few words replaced."""
    words = text.split()
    for _ in range(edits):
        words[rng.randrange(len(words))] = rng.choice(_WORDS)
    return " ".join(words)


def build(root: Path, n_clean: int = 40, seed: int = 0) -> tuple[Path, Path, dict[str, str]]:
    """Write corpus.jsonl and evals.jsonl under `root`; return them and {id: expected reason}
    for every planted document ("keep" for documents that must survive)."""
    rng = random.Random(seed)
    rows, expect = [], {}

    def add(doc_id: str, text: str, reason: str, domain: str = "web") -> None:
        rows.append({"id": doc_id, "text": text, "domain": domain})
        expect[doc_id] = reason

    clean = [salad(rng) for _ in range(n_clean)]
    for i, text in enumerate(clean):
        add(f"clean-{i}", text, "keep")
    for i in range(4):  # exact copies, one with different case and spacing
        text = clean[i] if i else "  " + clean[i].upper().replace(" ", "   ")
        add(f"exact-{i}", text, "exact")
    for i in range(4, 8):
        add(f"near-{i}", near_copy(rng, clean[i]), "minhash")
    add("repeat-1", salad(rng, 60) + " buy" * 40 + " " + salad(rng, 60), "repeated_ngram")
    add("repeat-3", salad(rng, 60) + " click here now" * 35, "repeated_ngram")
    item = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
    add("contam-1", salad(rng, 50) + " " + item + " " + salad(rng, 50), "decontam")
    # math: differs only in numbers, so MinHash would merge them; exact dedup keeps both
    for i in range(3):
        a, b = 10 + i, 20 + 3 * i
        add(
            f"math-{i}",
            f"Question: what is {a} plus {b}? Add {a} and {b} step by step. "
            f"Answer: {a} + {b} = {a + b}. The result is {a + b}.",
            "keep",
            "math",
        )
    add("math-copy", rows[-1]["text"], "exact", "math")
    corpus, evals = root / "corpus.jsonl", root / "evals.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    eval_rows = [
        {"id": "gsm-1", "prompt": item, "reference": "72", "verifier": "numeric"},
        {
            "id": "gsm-2",
            "prompt": "A train leaves the station at noon going sixty miles per "
            "hour toward a city that lies three hundred miles away.",
            "reference": "5",
            "verifier": "numeric",
        },
    ]
    evals.write_text("".join(json.dumps(r) + "\n" for r in eval_rows))
    return corpus, evals, expect


def topic_docs() -> list[dict]:
    """Distinct-topic documents plus paraphrases of two of them (for semantic dedup)."""
    rows = [{"id": f"topic-{k}", "text": v, "domain": "web"} for k, v in TOPICS.items()]
    rows += [{"id": f"para-{k}", "text": v, "domain": "web"} for k, v in PARAPHRASES.items()]
    return rows


def precision_recall(expect: dict[str, str], removed: dict[str, str]) -> tuple[float, float]:
    """Precision and recall of removal on the planted set (any removal reason counts)."""
    planted = {k for k, v in expect.items() if v != "keep"}
    hit = planted & set(removed)
    precision = len(hit) / max(len(removed), 1)
    recall = len(hit) / max(len(planted), 1)
    return precision, recall
