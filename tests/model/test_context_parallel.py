"""Context parallelism (Ulysses) on two gloo ranks against one process: loss and gradients,
with documents packed in a row (intra-document masking and per-document RoPE positions)."""

import copy
import dataclasses

import pytest
import torch
import torch.distributed as dist

from llmforge.model.context_parallel import apply_context_parallel, check_heads
from llmforge.model.gpt import GPT, ModelConfig
from tests.gloo import on_two_ranks

BASE = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                   ffn_hidden=48, max_seq_len=64, nope_every=2)  # fmt: skip
VARIANTS = {
    "gqa": {},
    "kv_heads_below_ranks": {"n_kv_heads": 1},
    "qk_norm_gated_softcap": {"qk_norm": True, "gated_attn": True, "attn_softcap": 20.0},
}


def batch():
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, 64, (2, 33), generator=g)
    doc_ids = torch.tensor([[0] * 5 + [1] * 20 + [2] * 7, [3] * 14 + [4] * 18])
    targets = tokens[:, 1:].clone()
    targets[doc_ids[:, 1:].ne(doc_ids[:, :-1]).nonzero(as_tuple=True)] = -100
    targets[0, -3:] = -100  # padding at the end of a row: ranks hold unequal target counts
    return tokens[:, :-1], targets, doc_ids


def _worker(rank: int) -> dict:
    results = {}
    for name, features in VARIANTS.items():
        torch.manual_seed(0)
        reference = GPT(dataclasses.replace(BASE, **features))
        model = copy.deepcopy(reference)
        apply_context_parallel(model, dist.group.WORLD)
        inputs, targets, doc_ids = batch()
        out_cp = model(inputs, targets=targets, doc_ids=doc_ids, z_loss=1e-3)
        out_cp.loss.backward()
        for p in model.parameters():  # what FSDP2 does: average over the ranks
            dist.all_reduce(p.grad)
            p.grad.div_(2)
        out_ref = reference(inputs, targets=targets, doc_ids=doc_ids, z_loss=1e-3)
        out_ref.loss.backward()
        ref_grads = dict(reference.named_parameters())
        results[name] = {
            "loss": (float(out_cp.loss), float(out_ref.loss)),
            "ce": (float(out_cp.ce), float(out_ref.ce)),
            "grad_diff": max(
                (p.grad - ref_grads[n].grad).abs().max().item() for n, p in model.named_parameters()
            ),
            "grad_scale": max(p.grad.abs().max().item() for p in reference.parameters()),
        }
    return results


def test_two_context_parallel_ranks_match_one_process(tmp_path):
    for results in on_two_ranks(_worker, tmp_path):
        for name, r in results.items():
            assert r["loss"][0] == pytest.approx(r["loss"][1], rel=1e-5), name
            assert r["ce"][0] == pytest.approx(r["ce"][1], rel=1e-5), name
            assert r["grad_diff"] < 1e-5 * max(1.0, r["grad_scale"]), name


def test_heads_must_split_over_the_ranks():
    check_heads(8, 2, 4)  # KV heads repeated: each rank gets the one its query heads use
    check_heads(8, 8, 4)
    with pytest.raises(ValueError, match="n_heads"):
        check_heads(6, 2, 4)
    with pytest.raises(ValueError, match="n_kv_heads"):
        check_heads(12, 3, 4)
