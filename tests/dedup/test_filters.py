"""The hand-written datatrove steps: repeated n-grams, decontamination, length, gates."""

import json

import numpy as np
import pytest
from datatrove.data import Document
from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

from llmforge.dedup import filters as F
from llmforge.dedup.config import DedupConfig, MinhashConfig
from llmforge.dedup.pipeline import minhash_config


def doc(text, domain="web", i="d"):
    return Document(text=text, id=i, metadata={"domain": domain})


@pytest.mark.parametrize(
    "tokens, expected",
    [
        (["a"] * 40, (1, 40)),
        (["x", "y"] + ["a", "b", "c"] * 5 + ["z"], (3, 5)),
        (list("abcdefgh"), (1, 1)),
        ([], (1, 0)),
    ],
)
def test_longest_repeat(tokens, expected):
    assert F.longest_repeat(tokens, 13) == expected


def test_longest_repeat_ignores_spans_longer_than_max():
    span = [str(i) for i in range(5)]
    assert F.longest_repeat(span * 10, 4)[1] < 10
    assert F.longest_repeat(span * 10, 5) == (5, 10)


def test_repeated_ngram_filter_threshold_is_inclusive():
    f = F.RepeatedNgramFilter(max_span=13, min_repeats=32)
    assert f.filter(doc("intro text " + "spam " * 32 + "outro")) is not True
    assert f.filter(doc("intro text " + "spam " * 31 + "outro")) is True
    keep, reason = f.filter(doc("go " + "to the shop, " * 33))
    assert keep is False and "4-token span repeats 33" in reason


def test_ngram_hashes_are_stable_and_see_numbers():
    a = F.ngram_hashes("One two three four five six", 3)
    assert len(a) == 4 and np.array_equal(a, F.ngram_hashes("one, TWO three four five six!", 3))
    assert not set(F.ngram_hashes("add 12 and 7 now", 3)) & set(
        F.ngram_hashes("add 13 and 8 now", 3)
    )
    assert len(F.ngram_hashes("too short", 3)) == 0


def test_decontamination_filter_records_items(tmp_path):
    evals = tmp_path / "evals.jsonl"
    item = "the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat"
    rows = [
        {"source": "toy", "id": "q1", "text": item},
        {"source": "toy", "id": "q2", "text": "x y"},
    ]
    evals.write_text("".join(json.dumps(r) + "\n" for r in rows))
    f = F.DecontaminationFilter(str(evals), ngram=13)
    d = doc("Preface words. " + item.upper() + " Closing words.")
    keep, reason = f.filter(d)
    assert keep is False and d.metadata["eval_hits"] == ["toy/q1"] and "toy/q1" in reason
    # 12 shared words are not enough for a 13-gram
    assert f.filter(doc(" ".join(item.split()[:12]) + " and then something else")) is True


def test_length_filter_and_domain_gate():
    f = F.LengthFilter(5, 10)
    assert f.filter(doc("abcdef")) is True
    assert f.filter(doc("abc"))[0] is False
    assert f.filter(doc("a" * 11))[0] is False
    gate = F.DomainGate(F.LengthFilter(5, 10), ["code"])
    assert gate.filter(doc("abc", domain="code")) is True
    assert gate.filter(doc("abc", domain="web"))[0] is False
    wordy = F.DomainGate(F.LengthFilter(0, 10), [], min_words=3)
    assert wordy.filter(doc("two words but very long")) is not True
    assert wordy.filter(doc("twowords butverylongindeed")) is True


def test_exact_key_normalises_case_and_space():
    assert F.normalized_text(doc("  Hello   WORLD\n")) == F.normalized_text(doc("hello world"))
    assert F.raw_text(doc("Hello")) != F.raw_text(doc("hello"))


def _shingles(cfg, text):
    step = MinhashDedupSignature("/tmp/unused-sigs", config=minhash_config(cfg))
    return set(step.get_shingles(text).ravel().tolist())


def test_datatrove_minhash_merges_numbers_unless_told_not_to():
    """Why math stays out of MinHash by default: digit runs all become '0'."""
    a = "Question: what is 12 plus 30? Add 12 and 30. Answer: 42."
    b = "Question: what is 17 plus 25? Add 17 and 25. Answer: 42."
    assert _shingles(DedupConfig(), a) == _shingles(DedupConfig(), b)
    raw = DedupConfig(minhash=MinhashConfig(normalize_numbers=False, skip_domains=[]))
    assert _shingles(raw, a) != _shingles(raw, b)
