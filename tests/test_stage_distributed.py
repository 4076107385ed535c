"""The stage contract under torchrun: two ranks (forked, gloo) learn rank 0's verdict at once.

Issue 15, fault 6: on a cache hit rank 0 returned while the other ranks waited 600 s for a
partial directory that was never created. Each case here must finish in seconds.
"""

import json
import multiprocessing
import os
import time

import pytest

from llmforge import artifact
from llmforge.errors import LLMForgeError
from llmforge.stage import execute
from tests.slow_stage import SLOW
from tests.train.test_distributed import free_port

DEADLINE_S = 60  # far below the old 600 s wait, far above the few seconds a case takes


def execute_on_two_ranks(tmp_path, out, sets: list[str]) -> list[dict]:
    """Run `execute(SLOW, ...)` as ranks 0 and 1 of one job; each rank's outcome."""
    ctx, port = multiprocessing.get_context("fork"), free_port()

    def rank_main(rank: int) -> None:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
        try:
            result = {"path": str(execute(SLOW, [], sets=sets, out=out))}
        except LLMForgeError as e:
            result = {"exit_code": e.exit_code, "message": str(e)}
        (tmp_path / f"rank{rank}.json").write_text(json.dumps(result))

    started = time.time()
    procs = [ctx.Process(target=rank_main, args=(r,)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(max(1.0, DEADLINE_S - (time.time() - started)))
    hung = [i for i, p in enumerate(procs) if p.is_alive()]
    for i in hung:
        procs[i].kill()
    assert not hung, f"rank(s) {hung} still waiting after {DEADLINE_S} s"
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture
def published(tmp_path):
    out = tmp_path / "out"
    execute(SLOW, [], sets=["seconds=0"], out=out)
    return out


def test_cache_hit_returns_on_every_rank(tmp_path, published):
    before = artifact.read_manifest(published)
    results = execute_on_two_ranks(tmp_path, published, ["seconds=0"])
    assert results == [{"path": str(published)}] * 2
    assert artifact.read_manifest(published) == before


def test_conflict_is_bad_input_on_every_rank(tmp_path, published):
    results = execute_on_two_ranks(tmp_path, published, ["seconds=0.5"])
    assert [r["exit_code"] for r in results] == [2, 2]
    assert all("holds a different artifact" in r["message"] for r in results)
    assert not published.with_name("out.partial").exists()


def test_fresh_run_publishes_once_and_every_rank_returns(tmp_path):
    out = tmp_path / "fresh"
    results = execute_on_two_ranks(tmp_path, out, ["seconds=0"])
    assert results == [{"path": str(out)}] * 2
    manifest = artifact.read_manifest(out)
    assert manifest["host"]["world_size"] == 2 and artifact.verify(out) == []


def test_lock_held_by_another_run_stops_every_rank(tmp_path):
    out = tmp_path / "locked"
    fd = artifact.acquire_lock(out)  # another run writing the same output
    try:
        results = execute_on_two_ranks(tmp_path, out, ["seconds=0"])
    finally:
        os.close(fd)
    assert [r["exit_code"] for r in results] == [2, 2]
    assert all("lock held" in r["message"] for r in results)
