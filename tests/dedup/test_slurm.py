"""The dedup steps as chained SlurmPipelineExecutor jobs on a real local Slurm (marker
`slurm`; scripts/local-slurm.sh starts it)."""

import shutil

import pytest

from llmforge import config
from llmforge.dedup.config import DedupConfig
from llmforge.dedup.driver import dedup
from tests.dedup import planted


@pytest.mark.slurm
@pytest.mark.skipif(shutil.which("sbatch") is None, reason="no Slurm on this machine")
@pytest.mark.slow
def test_slurm_executor_gives_the_local_result(tmp_path):
    corpus, evals, expect = planted.build(tmp_path, n_clean=12)
    sets = ["executor.kind=slurm", "executor.partition=debug", "executor.workers=2"]
    cfg = config.load(DedupConfig, None, sets)
    report = dedup(cfg, [corpus], [evals], tmp_path / "out", tmp_path / "out" / "_work")
    assert report["docs_kept"] == sum(v == "keep" for v in expect.values())
    assert set(report["removed"]) == {"decontam", "exact", "minhash", "repeated_ngram"}
    assert report["methods"]["slurm"]["docs_in"] == len(expect)
