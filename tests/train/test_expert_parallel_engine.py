"""The engine with `parallel.expert: 2` on two gloo ranks: each rank keeps half of every MoE
layer's experts, and training matches one process on the same global batch; checkpoints
keep the experts under their global names and resume on two ranks or one; the model
exported from them loads in transformers."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from llmforge import distributed
from llmforge.data.labelled_tokens import make_tokens
from llmforge.data.loader import DataConfig
from llmforge.errors import ConfigError
from llmforge.model.gpt import GPT, MoEConfig
from llmforge.model.hf import export_hf
from llmforge.train import checkpoint
from llmforge.train.config import ParallelConfig
from llmforge.train.engine import check_parallel, train_model
from tests.gloo import on_two_ranks
from tests.train.engine_helpers import TINY, make_run, spec, tiny_model

MOE = dataclasses.replace(
    TINY, moe=MoEConfig(n_experts=4, top_k=2, shared_expert=True, dense_layers=1)
)
EXPERT = "layers.1.mlp.experts."


def moe_model() -> GPT:
    torch.manual_seed(0)
    return GPT(MOE)


def moe_spec(tokens, batch_size: int, expert: int):
    """4 steps, checkpoints at 2 and 4; every target valid (no document masking), so the
    mean of the ranks' losses is the loss of their rows together."""
    base = spec(tokens, 4, batch_size=batch_size, checkpoint_every=2)
    data = DataConfig(val_batches=1, intra_doc_mask=False)
    return dataclasses.replace(base, data=data, parallel=ParallelConfig(expert=expert))


def train_lines(run) -> list[dict]:
    lines = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if "loss" in x]


def _worker(rank: int, tokens: Path, out: Path) -> dict:
    run = make_run(out / "ep", rank=rank, world=2)
    model, metrics = train_model(moe_model(), moe_spec(tokens, 4, 2), run)
    if rank == 0:  # what the stage publishes, from the full model every rank holds
        export_hf(model, out / "published")
        shutil.copytree(run.work / "ckpt-00000002", out / "again.partial/_work/ckpt-00000002")
    distributed.barrier()
    again = make_run(out / "again", rank=rank, world=2)  # resumes from the copied step 2
    resumed, _ = train_model(moe_model(), moe_spec(tokens, 4, 2), again)
    return {"state": model.state_dict(), "metrics": metrics, "resumed": resumed.state_dict()}


def shard_files(ckpt: Path) -> dict[str, str]:
    """The file each model entry of a DCP checkpoint was written to."""
    meta = checkpoint.SafeReader(ckpt / "shards").read_metadata()
    return {i.fqn.removeprefix("model."): s.relative_path for i, s in meta.storage_data.items()
            if i.fqn.startswith("model.")}  # fmt: skip


def test_expert_parallel_training_matches_one_process_and_resumes(tmp_path):
    tokens = make_tokens(tmp_path / "tok", {"a": 30, "b": 30})
    two = on_two_ranks(_worker, tmp_path, tokens, tmp_path)
    one = make_run(tmp_path / "one")
    model, metrics = train_model(moe_model(), moe_spec(tokens, 8, 1), one)
    ep = make_run(tmp_path / "ep")
    for a, b in zip(train_lines(ep), train_lines(one), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
        # the experts' share is small here: leaving out the other rank's moves it by 5e-5
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=2e-6)
    assert two[0]["metrics"]["tokens"] == metrics["tokens"]
    assert two[0]["metrics"]["params"] == metrics["params"]  # every expert counted
    for name, value in model.state_dict().items():
        for r in two:
            torch.testing.assert_close(r["state"][name], value, rtol=1e-4, atol=1e-5)
            assert torch.equal(r["resumed"][name], two[0]["state"][name]), name  # 2 -> 2
    # each rank wrote its own experts, under their global names
    files = shard_files(ep.work / "ckpt-00000004")
    for e, owner in ((0, 0), (1, 0), (2, 1), (3, 1)):
        assert files[f"{EXPERT}{e}.up_proj.weight"] == f"__{owner}_0.distcp"
    # 2 ranks -> 1 process: the checkpoint's experts load into the one-process model
    solo = make_run(tmp_path / "solo")
    shutil.copytree(ep.work / "ckpt-00000002", solo.work / "ckpt-00000002")
    resumed, _ = train_model(moe_model(), moe_spec(tokens, 8, 1), solo)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=1e-4, atol=1e-5)
    # the published model loads in transformers and gives the trained model's logits
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "published").eval()
    trained = GPT(MOE).eval()
    trained.load_state_dict(two[0]["state"])
    ids = torch.randint(1, 500, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, trained(ids).logits, rtol=1e-4, atol=1e-4)


def test_expert_parallel_needs_an_moe_model_and_a_launch_it_divides(tmp_path):
    tokens = make_tokens(tmp_path / "tok", {"a": 10})
    with pytest.raises(ConfigError, match="parallel.expert.*do not divide the 1 ranks"):
        train_model(moe_model(), moe_spec(tokens, 4, 2), make_run(tmp_path / "one"))
    with pytest.raises(ConfigError, match="parallel.expert.*needs an MoE model"):
        check_parallel(tiny_model(), moe_spec(tokens, 4, 2), world=2)
    odd = GPT(dataclasses.replace(MOE, moe=MoEConfig(n_experts=3, top_k=1)))
    with pytest.raises(ConfigError, match=r"parallel.expert.*n_experts \(3\).*multiple"):
        check_parallel(odd, moe_spec(tokens, 4, 2), world=2)
    with pytest.raises(ConfigError, match="expert.*context"):
        ParallelConfig(expert=2, context=2)


@pytest.mark.slow
def test_pretrain_with_expert_parallelism_under_torchrun(tiny_tokens, tmp_path):
    """The CLI on 2 processes with `parallel.expert=2` publishes the whole MoE model."""
    import os
    import subprocess
    import sys

    import transformers

    from llmforge import artifact
    from tests.stages.pretrain_helpers import sets
    from tests.train.test_distributed import ROOT, free_port

    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLMFORGE_QUIET": "1", "OMP_NUM_THREADS": "1"}
    moe = ["model.moe.n_experts=4", "model.moe.top_k=2", "model.moe.dense_layers=1"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
              f"--master-port={free_port()}", "-m", "stages.app", "pretrain", str(tiny_tokens),
              *sets("train.steps=6", "parallel.expert=2", *moe), "-o", str(tmp_path / "ep")]  # fmt: skip
    done = subprocess.run(launch, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = artifact.read_manifest(tmp_path / "ep")
    assert manifest["host"]["world_size"] == 2 and manifest["config"]["parallel"]["expert"] == 2
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ep")
    assert sum(p.numel() for p in hf.parameters()) == manifest["metrics"]["params"]
    experts = {n.split(".experts.")[1].split(".")[0] for n, _ in hf.named_parameters()
               if ".experts." in n}  # fmt: skip
    assert experts == {"0", "1", "2", "3"}
