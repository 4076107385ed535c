"""Expert parallelism on two gloo ranks against one process: outputs, loss and gradients."""

import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from llmforge.model import expert_parallel as ep
from llmforge.model.gpt import GPT, ModelConfig, MoEConfig

CFG = ModelConfig(
    vocab_size=64, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1, ffn_hidden=24,
    moe=MoEConfig(n_experts=4, top_k=2, shared_expert=True, dense_layers=1),
)  # fmt: skip


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(3))
    return tokens[:, :-1], tokens[:, 1:]


def _worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        reference = GPT(CFG)
        model = copy.deepcopy(reference)
        ep.shard_experts(model)
        inputs, targets = global_batch()
        mine = slice(rank * 2, rank * 2 + 2)  # each rank trains on half the global batch
        loss = model(inputs[mine], targets=targets[mine]).loss
        loss.backward()
        ep.average_gradients(model)
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        reference(inputs, targets=targets).loss.backward()  # no dispatch: one process
        ref_grads = {n: p.grad for n, p in reference.named_parameters()}
        grads = {n: p.grad for n, p in model.named_parameters()}
        experts = ep.gather_experts(model)
        torch.save(
            {
                "loss": float(mean_loss) / 2,
                "ref_loss": float(reference(inputs, targets=targets).loss),
                "grad_diff": max((g - ref_grads[n]).abs().max().item() for n, g in grads.items()),
                "names": sorted(grads),
                "expert_diff": max(
                    (v - reference.state_dict()[k]).abs().max().item() for k, v in experts.items()
                ),
                "experts": sorted(experts),
            },
            f"{out}.{rank}",
        )
    finally:
        dist.destroy_process_group()


def test_two_expert_parallel_ranks_match_one_process(tmp_path):
    out = str(tmp_path / "result")
    mp.start_processes(_worker, args=(str(tmp_path / "store"), out), nprocs=2, start_method="fork")
    results = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]
    moe_experts = {f"layers.1.mlp.experts.{e}" for e in range(4)}
    for rank, r in enumerate(results):
        assert r["loss"] == pytest.approx(r["ref_loss"], rel=1e-6)
        assert r["grad_diff"] < 1e-6
        owned = {n.rsplit(".", 2)[0] for n in r["names"] if ".experts." in n}
        assert owned == {f"layers.1.mlp.experts.{e}" for e in (2 * rank, 2 * rank + 1)}
        assert {n.rsplit(".", 2)[0] for n in r["experts"]} == moe_experts
        assert r["expert_diff"] == 0.0


def test_expert_count_must_divide_by_the_ranks(tmp_path):
    def worker(rank: int, store: str) -> None:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
        try:
            odd = ModelConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1,
                              ffn_hidden=16, moe=MoEConfig(n_experts=3, top_k=1))  # fmt: skip
            with pytest.raises(ValueError, match="multiple"):
                ep.shard_experts(GPT(odd))
        finally:
            dist.destroy_process_group()

    mp.start_processes(worker, args=(str(tmp_path / "store"),), nprocs=2, start_method="fork")
