"""`llmforge dedup`: clean a corpus into a new corpus artifact.

Exact and MinHash dedup, the repeated n-gram filter, semantic dedup, decontamination
against eval files and quality filters, on datatrove (see llmforge/dedup and
docs/stages/dedup.md). Publishes `documents/*.jsonl`, `removed/<reason>.jsonl` and
`report.json`; the report's figures are also the manifest metrics.
"""

from __future__ import annotations

from llmforge import log
from llmforge.artifact import Run
from llmforge.dedup.config import DedupConfig
from llmforge.dedup.driver import dedup
from llmforge.dedup.report import render
from llmforge.stage import Inputs, Role, Stage

Config = DedupConfig


def run(cfg: Config, inputs: Inputs, out: Run) -> dict:
    corpus = [ref.path for ref in inputs.all("corpus")]
    evals = [ref.path for ref in inputs.all("eval")]
    report = dedup(cfg, corpus, evals, out.dir, out.work)
    for table in render(report):
        log.console.print(table)
    return {k: v for k, v in report.items() if k != "samples"}


STAGE = Stage(
    name="dedup",
    kind="corpus",
    config=Config,
    run=run,
    roles={
        "corpus": Role(
            kinds=("corpus", "tokens", "raw"),
            min=1,
            max=None,
            help="documents to clean: corpus or tokens artifacts, or jsonl files/directories",
        ),
        "eval": Role(
            kinds=("raw",), min=0, max=None, help="eval task jsonl to decontaminate against"
        ),
    },
    default_role="corpus",
    help="Remove duplicates, near-duplicates, repetitive, low-quality and eval-contaminated "
    "documents; publish the cleaned corpus with a report of what went and why.",
)
