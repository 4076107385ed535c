"""Distributed tokenize: tasks over the input files, one shard each, one shuffled index; the
same documents per split for any number of tasks (local processes and a real Slurm array);
format-1 (single-shard) artifacts still load."""

import json

import numpy as np
import pytest
import torch

from llmforge import artifact
from llmforge.data import shards
from llmforge.data.loader import PackedLoader, Source
from llmforge.data.tokens import TokenStore
from llmforge.regmix.search import data_stats
from llmforge.stage import execute
from stages.tokenize import STAGE
from tests.test_slurm import local_slurm  # noqa: F401  (fixture)


def tokenize(corpus: dict, tokenizer, out, *sets):
    items = [f"{d}={p}" for d, p in corpus.items()] + [f"tokenizer={tokenizer}"]
    return execute(STAGE, items, sets=["val_fraction=0.1", *sets], out=out)


def same_documents(a, b) -> None:
    for split in ("train", "val"):
        sa, sb = TokenStore(a, split), TokenStore(b, split)
        assert len(sa) == len(sb) > 0 and sa.domains == sb.domains
        assert np.array_equal(np.asarray(sa.domain_ids), np.asarray(sb.domain_ids))
        assert all(np.array_equal(sa.doc(i), sb.doc(i)) for i in range(len(sa)))


@pytest.fixture(scope="module")
def one_task(tmp_path_factory, tiny_corpus, tiny_tokens):
    return tokenize(tiny_corpus, tiny_tokens, tmp_path_factory.mktemp("one") / "t")


def test_plan_cuts_files_into_contiguous_parts_of_about_equal_bytes():
    files = [shards.InputFile(f"f{i}", "d", size) for i, size in enumerate([5, 5, 30, 5, 5, 10])]
    parts = shards.plan_tasks(files, 3)
    assert [f for part in parts for f in part] == files  # reading order kept, nothing lost
    assert [sum(f.size for f in p) for p in parts] == [10, 30, 20]
    assert len(shards.plan_tasks(files[:2], 5)) == 2  # never an empty task


def test_three_local_tasks_give_the_same_documents_per_split(tmp_path, one_task, tiny_corpus,
                                                             tiny_tokens):  # fmt: skip
    three = tokenize(tiny_corpus, tiny_tokens, tmp_path / "t3", "tasks=3", "workers=2")
    m = artifact.read_manifest(three)["metrics"]
    assert m["tasks"] == 3 and len(list((three / "shards").glob("*.bin"))) == 3
    assert artifact.read_manifest(one_task)["metrics"]["shards"] == 1
    same_documents(one_task, three)
    assert artifact.verify(three) == []
    # readers across shards: the loader and regmix's statistics see the same data
    assert data_stats([three]) == data_stats([one_task])
    batches = []
    for root in (one_task, three):
        source = Source([TokenStore(root, "train")])
        loader = PackedLoader(source, [np.ones(3) / 3], [100], batch_size=4, seq_len=64)
        batches.append(loader.next_batch().inputs)
    assert torch.equal(*batches)


def test_a_rerun_only_runs_the_tasks_without_a_result(tmp_path, tiny_corpus, tiny_tokens):
    files = [shards.InputFile(str(p), d, p.stat().st_size) for d, p in tiny_corpus.items()]
    tok = tiny_tokens / "tokenizer" / "tokenizer.json"
    paths = shards.write_tasks(shards.plan_tasks(files, 3), tmp_path / "tasks", tmp_path / "shards",
                               tok)  # fmt: skip
    shards.run_local(paths, workers=1)
    results = [shards.read_task(p).result_path() for p in paths]
    before = [r.stat().st_mtime_ns for r in results]
    results[1].unlink()  # as if task 1 was killed
    assert shards.pending(paths) == [paths[1]]
    shards.run_local(paths, workers=1)
    after = [r.stat().st_mtime_ns for r in results]
    assert after[0] == before[0] and after[2] == before[2] and results[1].is_file()


def write_format1(root, store: TokenStore) -> None:
    """The layout llmforge wrote before shards: {split}/tokens.bin and a [n, 3] index."""
    meta = json.loads((store.root / "tokens.json").read_text())
    for split in ("train", "val"):
        src = TokenStore(store.root, split)
        docs = [np.asarray(src.doc(i)) for i in range(len(src))]
        lengths = np.array([len(d) for d in docs])
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        (root / split).mkdir(parents=True)
        np.concatenate(docs).astype(meta["dtype"]).tofile(root / split / "tokens.bin")
        index = np.stack([starts, lengths, np.asarray(src.domain_ids)], axis=1)
        np.save(root / split / "docs.npy", index.astype(np.int64))
        meta["splits"][split] = {"documents": len(docs), "tokens": int(lengths.sum())}
    meta.pop("format")
    (root / "tokens.json").write_text(json.dumps(meta))


def test_a_format1_single_shard_artifact_still_loads(tmp_path, one_task):
    old = tmp_path / "old"
    write_format1(old, TokenStore(one_task))
    assert not (old / "shards").exists()
    same_documents(one_task, old)
    new, legacy = TokenStore(one_task), TokenStore(old)
    assert legacy.domain_tokens() == new.domain_tokens()
    assert list(legacy.docs_in("math")) == list(new.docs_in("math"))


@pytest.mark.slurm
@pytest.mark.slow
def test_two_slurm_array_tasks_give_the_same_documents(local_slurm, tmp_path, one_task,  # noqa: F811
                                                       tiny_corpus, tiny_tokens):  # fmt: skip
    two = tokenize(tiny_corpus, tiny_tokens, tmp_path / "t2", "tasks=2", "slurm.enabled=true",
                   "slurm.poll_s=1")  # fmt: skip
    assert artifact.read_manifest(two)["metrics"]["tasks"] == 2
    same_documents(one_task, two)
