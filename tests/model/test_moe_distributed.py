"""MoE routing statistics are summed over ranks: two CPU processes over gloo."""

import torch
import torch.multiprocessing as mp

from llmforge import distributed
from llmforge.model.gpt import GPT, ModelConfig, MoEConfig

CFG = ModelConfig(
    vocab_size=50, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, ffn_hidden=16,
    moe=MoEConfig(n_experts=4, top_k=1),
)  # fmt: skip
LOADS = {0: [6.0, 0.0, 0.0, 2.0], 1: [0.0, 1.0, 4.0, 3.0]}  # summed: [6, 1, 4, 5], mean 4


def _worker(rank: int, store: str, out: str) -> None:
    distributed.init(rank=rank, world_size=2, init_method=f"file://{store}")
    try:
        assert distributed.check_installed()
        model = GPT(CFG)
        moe = model.moe_layers()[0]
        moe.expert_load.copy_(torch.tensor(LOADS[rank]))
        stats = model.update_moe_bias(0.5)
        torch.save({"bias": moe.expert_bias.clone(), "stats": stats}, f"{out}.{rank}")
    finally:
        distributed.destroy()


def test_update_moe_bias_all_reduces_loads(tmp_path):
    out = str(tmp_path / "result")
    mp.start_processes(_worker, args=(str(tmp_path / "store"), out), nprocs=2, start_method="fork")
    results = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]
    for result in results:
        torch.testing.assert_close(result["bias"], torch.tensor([-0.5, 0.5, 0.0, -0.5]))
        assert result["stats"]["moe_tokens_per_expert"] == [6.0, 1.0, 4.0, 5.0]
        assert result["stats"]["moe_imbalance"] == 1.5
