"""llmforge.distributed: collectives land on a device the group serves, and the discipline
check stops a collective that bypasses the module or hands over a tensor on the wrong device.

The 2-rank tests fork two CPU processes over gloo with the check on, as every distributed
test runs (tests/conftest.py sets LLMFORGE_COLLECTIVE_CHECK=1).
"""

import json
import multiprocessing
import traceback

import pytest
import torch
import torch.distributed as dist

from llmforge import distributed
from llmforge.errors import BadInput
from llmforge.train.loop import Loop


def run_two_ranks(worker, tmp_path, timeout_s: float = 60) -> list[dict]:
    """Fork two ranks of `worker(rank, store)`; each returns a JSON-able dict."""
    ctx = multiprocessing.get_context("fork")
    store = str(tmp_path / "store")

    def target(rank: int) -> None:
        try:
            distributed.init(rank=rank, world_size=2, init_method=f"file://{store}")
            result = worker(rank)
        except BaseException:
            result = {"crash": traceback.format_exc()}
        (tmp_path / f"rank{rank}.json").write_text(json.dumps(result))

    procs = [ctx.Process(target=target, args=(r,)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout_s)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
    assert not hung, f"a rank did not finish within {timeout_s} s"
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in results:
        assert "crash" not in r, r.get("crash")
    return results


def misuse(call) -> str | None:
    """The CollectiveMisuse message `call` raises, or None if it raises none."""
    try:
        call()
    except distributed.CollectiveMisuse as e:
        return str(e)
    return None


# ---------------------------------------------------------------- without a process group


def test_every_collective_is_the_identity_without_a_group():
    assert not distributed.is_distributed()
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce(t) is t and distributed.all_reduce(3, "max") == 3
    assert distributed.any_rank(True) and not distributed.any_rank(False)
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.main_decides(lambda: 7) == 7
    assert (distributed.get_rank(), distributed.get_world_size()) == (0, 1)


def test_bad_timeout_names_the_variable(monkeypatch):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(BadInput, match="LLMFORGE_COLLECTIVE_TIMEOUT_S='soon'"):
        distributed.timeout_s()
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "90")
    assert distributed.timeout_s() == 90.0


class Seen(Exception):
    """Raised by the fake collectives once they have recorded what they were given."""


@pytest.fixture
def meta_only_group(monkeypatch):
    """Pretend a group that serves only `meta` tensors (as NCCL serves only CUDA ones):
    the raw collectives record the device they were handed and stop there."""
    seen: list[torch.device] = []
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "get_rank", lambda: 0)
    monkeypatch.setattr(distributed, "served_device_types", lambda group=None: {"meta"})
    monkeypatch.setattr(distributed, "device", lambda: torch.device("meta"))

    def record_tensor(tensor, *args, **kwargs):
        seen.append(tensor.device)
        raise Seen

    def record_objects(objects, *args, device=None, **kwargs):
        seen.append(torch.device(device))
        raise Seen

    monkeypatch.setattr(dist, "all_reduce", record_tensor)
    monkeypatch.setattr(dist, "broadcast_object_list", record_objects)
    return seen


def test_collectives_move_cpu_values_to_the_device_the_group_serves(meta_only_group):
    for call in (
        lambda: distributed.all_reduce(torch.ones(3)),
        lambda: distributed.all_reduce(2.5, "avg"),
        lambda: distributed.any_rank(True),
        lambda: distributed.broadcast_object({"x": 1}),
    ):
        with pytest.raises(Seen):
            call()
    assert meta_only_group == [torch.device("meta")] * 4


# ---------------------------------------------------------------- two ranks over gloo


def _refuse():
    raise BadInput("taken", path="/o")


def _collectives(rank: int) -> dict:
    tensor = distributed.all_reduce(torch.tensor([float(rank), 1.0]), "max")
    try:
        refused = distributed.main_decides(_refuse)
    except BadInput as e:
        refused = str(e)
    return {
        "sum": distributed.all_reduce(rank + 1),
        "avg": distributed.all_reduce(torch.tensor(float(rank)), "avg").item(),
        "max": tensor.tolist(),
        "any": distributed.any_rank(rank == 1),
        "none": distributed.any_rank(False),
        "object": distributed.broadcast_object({"from": rank}),
        "decided": distributed.main_decides(lambda: ("rank 0 says", rank)),
        "refused": refused,
        "checked": distributed.check_installed(),
    }


def test_collectives_over_two_ranks(tmp_path):
    for r in run_two_ranks(_collectives, tmp_path):
        assert r["checked"]
        assert r["sum"] == 3 and r["avg"] == 0.5 and r["max"] == [1.0, 1.0]
        assert r["any"] is True and r["none"] is False
        assert r["object"] == {"from": 0} and r["decided"] == ["rank 0 says", 0]
        assert r["refused"].endswith("/o: taken")  # rank 1 gets rank 0's message too


def _bypasses(rank: int) -> dict:
    # Code in llmforge/ that calls torch.distributed itself, as loop.py once did.
    ours = {"__name__": "llmforge.train.fake", "dist": dist, "t": torch.zeros(1)}
    outside = misuse(lambda: exec("dist.all_reduce(t)", ours))
    # A tensor on a device the gloo group does not serve (as a CPU tensor is to NCCL).
    wrong = misuse(lambda: dist.all_reduce(torch.zeros(1, device="meta")))
    distributed.barrier()
    return {"outside": outside, "wrong": wrong}


def test_check_stops_bypasses_and_wrong_devices(tmp_path):
    for r in run_two_ranks(_bypasses, tmp_path):
        assert "llmforge.train.fake calls torch.distributed.all_reduce directly" in r["outside"]
        assert "got a tensor on meta" in r["wrong"] and "serves only ['cpu']" in r["wrong"]


def _stop_flag(rank: int) -> dict:
    loop = Loop.__new__(Loop)  # only the preemption flag matters here
    loop._preempted = rank == 1
    first = loop._stop_requested()
    loop._preempted = False
    return {"first": first, "second": loop._stop_requested()}


def test_one_ranks_preemption_stops_every_rank(tmp_path):
    """Fault 1 of issue 15: the loop's stop flag is a collective every step."""
    for r in run_two_ranks(_stop_flag, tmp_path):
        assert r == {"first": True, "second": False}
