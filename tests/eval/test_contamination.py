"""Decontamination: n-gram matching, and finding training data through lineage."""

import json

from llmforge import artifact
from llmforge.eval import contamination
from tests.conftest import write_jsonl
from tests.eval.helpers import publish_model_from

ITEM = (
    "Ada has 17 apples and gives away 5. Then Ada finds 3 more. How many apples does Ada have now?"
)


def test_ngrams_normalise_case_and_punctuation():
    a = contamination.ngrams("Ada has 17 APPLES, and gives!", 3)
    assert ("ada", "has", "17") in a and ("apples", "and", "gives") in a
    assert contamination.ngrams("too short", 3) == set()


def test_check_flags_planted_item_only(tmp_path):
    raw = write_jsonl(
        tmp_path / "math.jsonl",
        [
            {"id": "clean", "text": "Ben has 4 pens. How many pens does Ben have?"},
            {"id": "dirty", "text": "Worked example.\n" + ITEM.upper() + "\nSolution: 15."},
        ],
    )
    chat = write_jsonl(
        tmp_path / "sft.jsonl",
        [
            {
                "id": "c1",
                "messages": [
                    {
                        "role": "user",
                        "content": "Cleo has 3 coins and 4 bags "
                        "with 2 coins in each bag on the table by the door",
                    }
                ],
            }
        ],
    )
    items = {
        "math": {
            "e1": ITEM,
            "e2": "Eve has 9 cards in a box. Eve gets 2 more cards from Dan. How many now?",
        },
        "chat": {
            "e3": "Cleo has 3 coins and 4 bags with 2 coins in each bag on the table "
            "and then sells every coin",
            "short": "What is 2 + 2?",
        },
    }
    srcs = [contamination.Source(raw, "raw", "x"), contamination.Source(chat, "raw", "x")]
    report = contamination.check(items, srcs, n=13)
    assert report.ids("math") == {"e1"} and report.ids("chat") == {"e3"}
    assert report.contaminated["math"]["e1"]["doc"] == "dirty"
    assert report.contaminated["math"]["e1"]["overlap"] == 1.0
    assert report.unchecked == {"chat": ["short"]}
    assert report.documents == 3
    strict = contamination.check(items, srcs, n=8, min_overlap=1.0)
    assert strict.ids("chat") == set() and strict.ids("math") == {"e1"}  # partial vs full


def test_sources_through_lineage_stop_at_corpus(tmp_path, tiny_tokens, tiny_model, tiny_corpus):
    model = publish_model_from(tiny_model, tmp_path / "m1", [tiny_tokens])
    found = {s.path for s in contamination.training_sources(model)}
    assert found == {p.resolve() for p in tiny_corpus.values()}

    # A corpus artifact made from a raw file: its documents count, the raw file does not.
    raw = write_jsonl(tmp_path / "raw.jsonl", [{"id": "r", "text": "removed by dedup"}])
    ref = artifact.open_input(raw, ("raw",), "corpus")
    art_id = artifact.compute_id("dedup", {}, [(ref.role, ref.id)])
    run = artifact.Run(tmp_path / "corpus", art_id, "corpus", "dedup", {}, [ref])
    artifact.prepare_partial(run, replace=True)
    write_jsonl(run.dir / "documents" / "part0.jsonl", [{"id": "k", "text": "kept"}])
    run.commit({}, replace=True)
    model2 = publish_model_from(tiny_model, tmp_path / "m2", [tmp_path / "corpus"])
    (src,) = contamination.training_sources(model2)
    assert src.kind == "corpus" and src.path == (tmp_path / "corpus" / "documents").resolve()
    assert [t for _, t in contamination.iter_texts(src.path)] == ["kept"]
    assert json.loads((tmp_path / "corpus" / "manifest.json").read_text())["kind"] == "corpus"
