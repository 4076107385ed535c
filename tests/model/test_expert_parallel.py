"""Expert parallelism on two gloo ranks against one process: outputs, loss and gradients."""

import copy

import pytest
import torch
import torch.distributed as dist

from llmforge.model import expert_parallel as ep
from llmforge.model.gpt import GPT, ModelConfig, MoEConfig
from tests.gloo import on_two_ranks

CFG = ModelConfig(
    vocab_size=64, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1, ffn_hidden=24,
    moe=MoEConfig(n_experts=4, top_k=2, shared_expert=True, dense_layers=1),
)  # fmt: skip


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(3))
    return tokens[:, :-1], tokens[:, 1:]


def _worker(rank: int) -> dict:
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
    ref_state = reference.state_dict()
    return {
        "loss": float(mean_loss) / 2,
        "ref_loss": float(reference(inputs, targets=targets).loss),
        "grad_diff": max((g - ref_grads[n]).abs().max().item() for n, g in grads.items()),
        "names": sorted(grads),
        "expert_diff": max((v - ref_state[k]).abs().max().item() for k, v in experts.items()),
        "experts": sorted(experts),
    }


def test_two_expert_parallel_ranks_match_one_process(tmp_path):
    results = on_two_ranks(_worker, tmp_path)
    moe_experts = {f"layers.1.mlp.experts.{e}" for e in range(4)}
    for rank, r in enumerate(results):
        assert r["loss"] == pytest.approx(r["ref_loss"], rel=1e-6)
        assert r["grad_diff"] < 1e-6
        owned = {n.rsplit(".", 2)[0] for n in r["names"] if ".experts." in n}
        assert owned == {f"layers.1.mlp.experts.{e}" for e in (2 * rank, 2 * rank + 1)}
        assert {n.rsplit(".", 2)[0] for n in r["experts"]} == moe_experts
        assert r["expert_diff"] == 0.0


def test_expert_count_must_divide_by_the_ranks(tmp_path):
    def worker(rank: int) -> str:
        odd = ModelConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1,
                          ffn_hidden=16, moe=MoEConfig(n_experts=3, top_k=1))  # fmt: skip
        try:
            ep.shard_experts(GPT(odd))
        except ValueError as e:
            return str(e)
        return "no error"

    assert all("multiple" in message for message in on_two_ranks(worker, tmp_path))
