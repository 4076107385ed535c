"""The engine with `parallel.context: 2` on two gloo ranks: one sequence split over both,
the same data and (up to float rounding) the same losses and weights as one process."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from llmforge.data.labelled_tokens import make_tokens
from llmforge.errors import ConfigError
from llmforge.train.config import ParallelConfig
from llmforge.train.engine import train_model
from tests.gloo import on_ranks, on_two_ranks
from tests.train.engine_helpers import make_run, spec, tiny_model


def context_spec(tokens, context: int):
    base = spec(tokens, 4, log_every=1)
    return dataclasses.replace(base, parallel=ParallelConfig(context=context))


def losses(run) -> list[float]:
    lines = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    return [x["loss"] for x in lines if "loss" in x] + [lines[-1]["val_loss"]]


def _worker(rank: int, tokens: Path, out: Path) -> dict:
    run = make_run(out / "cp", rank=rank, world=2)
    model, lengths = tiny_model(), set()
    model.layers[0].register_forward_hook(lambda m, args, o: lengths.add(args[0].shape[1]))
    model, metrics = train_model(model, context_spec(tokens, 2), run)
    return {"state": model.state_dict(), "metrics": metrics, "lengths": sorted(lengths)}


def test_context_parallel_training_matches_one_process(tmp_path):
    tokens = make_tokens(tmp_path / "tok", {"a": 30, "b": 30})
    two = on_two_ranks(_worker, tmp_path, tokens, tmp_path)[0]
    one = make_run(tmp_path / "one")
    model, metrics = train_model(tiny_model(), context_spec(tokens, 1), one)
    assert two["lengths"] == [16]  # each rank's blocks saw half of every 32-token row
    assert losses(make_run(tmp_path / "cp")) == pytest.approx(losses(one), rel=1e-4)
    assert two["metrics"]["tokens"] == metrics["tokens"]  # one batch per group, not per rank
    for name, value in model.state_dict().items():
        torch.testing.assert_close(two["state"][name], value, rtol=1e-4, atol=1e-5)


def test_context_parallel_needs_a_launch_it_divides(tmp_path):
    tokens = make_tokens(tmp_path / "tok", {"a": 10})
    with pytest.raises(ConfigError, match="parallel.context"):
        train_model(tiny_model(), context_spec(tokens, 2), make_run(tmp_path / "out"))


def _data_parallel_worker(rank: int, tokens: Path, out: Path, context: int) -> list[float]:
    world = dist.get_world_size()
    run = make_run(out / f"world{world}", rank=rank, world=world)
    train_model(tiny_model(), context_spec(tokens, context), run)
    return losses(run) if rank == 0 else []


def test_two_context_groups_of_two_match_two_data_parallel_ranks(tmp_path):
    """4 ranks = 2 data-parallel groups x 2 context ranks: sub-groups, and the same data
    and losses as 2 plain FSDP ranks."""
    tokens = make_tokens(tmp_path / "tok", {"a": 30, "b": 30})
    four = on_ranks(4, _data_parallel_worker, tmp_path, tokens, tmp_path, 2)[0]
    two = on_ranks(2, _data_parallel_worker, tmp_path, tokens, tmp_path, 1)[0]
    assert four == pytest.approx(two, rel=1e-5)
