"""End to end on the planted corpus: every planted document is removed for the right
reason, clean ones survive, the report adds up, and a re-run resumes from datatrove's
completion markers."""

import json
import shutil

import pytest

from llmforge import config
from llmforge.dedup.config import DedupConfig
from llmforge.dedup.driver import dedup
from tests.dedup import planted

# Random-word documents all embed alike (cosine about 0.7 with MiniLM), so here the
# semantic step runs on the "forum" domain that holds the topic texts and paraphrases;
# test_semantic.py checks the encoder on distinct topics.
pytestmark = pytest.mark.slow  # two full runs (spacy import, encoder load): about a minute

SETS = ["executor.workers=1", "semantic.enabled=true", "semantic.skip_domains=[math, web]"]


def removed_reasons(out):
    reasons = {}
    for f in (out / "removed").glob("*.jsonl"):
        for line in f.read_text().splitlines():
            row = json.loads(line)
            reasons[row["id"]] = row["reason"]
    return reasons


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    corpus, evals, expect = planted.build(root)
    with open(corpus, "a") as f:  # paraphrases for the semantic step
        for row in planted.topic_docs():
            f.write(json.dumps(dict(row, domain="forum")) + "\n")
            expect[row["id"]] = "semantic" if row["id"].startswith("para-") else "keep"
    cfg = config.load(DedupConfig, None, SETS)
    out = root / "out"
    report = dedup(cfg, [corpus], [evals], out, out / "_work")
    return cfg, corpus, evals, expect, out, report


def test_each_planted_document_goes_for_its_reason(run):
    _, _, _, expect, out, _ = run
    got = removed_reasons(out)
    wrong = {
        k: (want, got.get(k, "keep")) for k, want in expect.items() if got.get(k, "keep") != want
    }
    assert wrong == {}
    precision, recall = planted.precision_recall(expect, got)
    print(f"planted set: precision {precision:.3f} recall {recall:.3f} over {len(expect)} docs")
    assert (precision, recall) == (1.0, 1.0)


def test_kept_documents_are_the_clean_ones(run):
    _, _, _, expect, out, report = run
    kept = [
        json.loads(line)
        for f in sorted((out / "documents").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    assert {r["id"] for r in kept} == {k for k, v in expect.items() if v == "keep"}
    assert all(set(r) == {"id", "text", "domain"} for r in kept)
    assert report["docs_kept"] == len(kept)


def test_report_adds_up(run):
    _, _, _, expect, _, report = run
    assert report["docs_in"] == len(expect)
    assert report["docs_kept"] + report["docs_removed"] == report["docs_in"]
    assert report["removed"]["exact"]["per_domain"]["math"]["docs"] == 1
    assert report["eval_items_hit"] == {"evals/gsm-1": 1}
    assert set(report["methods"]) == {"filter", "exact", "minhash", "semantic"}
    assert report["samples"]["repeated_ngram"][0]["detail"].startswith("a ")
    kept_domains = report["kept"]["per_domain"]
    assert kept_domains["math"]["docs"] == 3  # numbers differ: MinHash never saw them


def test_rerun_resumes_without_redoing_finished_tasks(run, tmp_path):
    cfg, corpus, evals, _, out, report = run
    work = tmp_path / "out" / "_work"
    shutil.copytree(out / "_work", work)
    # simulate a crash during the last MinHash step: its markers and output are gone
    shutil.rmtree(work / "logs" / "minhash-4" / "completions")
    shutil.rmtree(work / "deduped")
    filtered = sorted((work / "filtered").glob("*.jsonl"))
    stamps = [f.stat().st_mtime_ns for f in filtered]
    again = dedup(cfg, [corpus], [evals], tmp_path / "out", work)
    assert [f.stat().st_mtime_ns for f in filtered] == stamps  # the filter step was skipped
    assert again["docs_kept"] == report["docs_kept"]
    assert again["removed"] == report["removed"]
