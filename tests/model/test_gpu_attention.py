"""FlexAttention with document masks on a CUDA GPU, forward and backward.

On CUDA, packed rows (`doc_ids`) take the compiled FlexAttention path; the CPU tests
cover the SDPA mask path only, because FlexAttention has no CPU backward. Here flex is
checked against SDPA with the dense block-diagonal causal mask at Llama-3-8B's attention
shape (32 query / 8 KV heads of 128) and 4096 tokens in bf16, and the whole model is
checked to treat a packed row as its documents trained apart. bf16 kernels accumulate in
different orders, so results are compared by relative error (1-2e-2). Skipped without
CUDA; `scripts/gpu-check.sh` runs them (`pytest -m gpu`).
"""

from __future__ import annotations

import pytest
import torch

from llmforge.model.attention import CausalMask, attention
from llmforge.model.gpt import GPT, ModelConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
DEVICE = "cuda"
SEQ, HEADS, KV_HEADS, HEAD_DIM = 4096, 32, 8, 128


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().float(), want.detach().float()
    return float((got - want).norm() / want.norm().clamp(min=1e-30))


def _doc_ids(seq: int, lengths: list[int]) -> torch.Tensor:
    """[1, seq] document ids from lengths (the last document takes the rest of the row)."""
    ids = torch.full((seq,), len(lengths), dtype=torch.long)
    start = 0
    for i, n in enumerate(lengths):
        ids[start : start + n] = i
        start += n
    return ids[None].to(DEVICE)


def _qkv(batch, heads, kv_heads, seq, dim, seed=0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    shapes = [(batch, heads, seq, dim), (batch, kv_heads, seq, dim), (batch, kv_heads, seq, dim)]
    return [torch.randn(s, device=DEVICE, generator=g, dtype=torch.bfloat16) for s in shapes]


def _fwd_bwd(backend, qkv, mask, softcap=None):
    leaves = [t.detach().clone().requires_grad_() for t in qkv]
    out = attention(*leaves, mask=mask, softcap=softcap, backend=backend)
    dy = torch.randn(out.shape, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(9))
    return out, torch.autograd.grad(out, leaves, dy.to(out.dtype))


def _packed_mask(seq: int) -> CausalMask:
    # row 0: documents of 1, 700, 129 and 2000 tokens, then the rest (boundaries off the
    # 128-token blocks); row 1: one document, i.e. plain causal through the same path
    docs = torch.cat([_doc_ids(seq, [1, 700, 129, 2000]), _doc_ids(seq, [])])
    return CausalMask(seq, docs)


def test_flex_document_mask_matches_sdpa_bf16():
    qkv = _qkv(2, HEADS, KV_HEADS, SEQ, HEAD_DIM)
    mask = _packed_mask(SEQ)
    out, grads = _fwd_bwd("flex", qkv, mask)
    ref, ref_grads = _fwd_bwd("sdpa", qkv, mask)
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    assert _rel_err(out, ref) < 1e-2
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.isfinite(g).all()
        assert _rel_err(g, r) < 2e-2


def test_flex_outputs_ignore_other_documents():
    """Changing one document's keys and values leaves every other document's output alone."""
    q, k, v = _qkv(1, HEADS, KV_HEADS, SEQ, HEAD_DIM, seed=1)
    docs = _doc_ids(SEQ, [1000, 1500])  # documents 0, 1 and 2 (the last 1596 tokens)
    mask = CausalMask(SEQ, docs)
    before = attention(q, k, v, mask=mask, backend="flex")
    k2, v2 = k.clone(), v.clone()
    in_doc1 = (docs[0] == 1).nonzero().squeeze(1)
    k2[:, :, in_doc1] += 3.0
    v2[:, :, in_doc1] -= 3.0
    after = attention(q, k2, v2, mask=mask, backend="flex")
    others = docs[0] != 1
    torch.testing.assert_close(after[:, :, others], before[:, :, others], atol=1e-3, rtol=0)
    assert (after[:, :, in_doc1] - before[:, :, in_doc1]).abs().max() > 0.1


def test_flex_softcap_with_documents_matches_eager_bf16():
    qkv = _qkv(2, 8, 2, 1024, 64, seed=2)
    docs = torch.cat([_doc_ids(1024, [300, 5]), _doc_ids(1024, [513])])
    mask = CausalMask(1024, docs)
    out, grads = _fwd_bwd("flex", qkv, mask, softcap=30.0)
    ref, ref_grads = _fwd_bwd("eager", qkv, mask, softcap=30.0)
    assert _rel_err(out, ref) < 1e-2
    for g, r in zip(grads, ref_grads, strict=True):
        assert _rel_err(g, r) < 2e-2


def _targets(ids: torch.Tensor, doc_ids: torch.Tensor) -> torch.Tensor:
    """Next token within the document; -100 at each document's last token."""
    t = torch.full_like(ids, -100)
    same = doc_ids[:, 1:] == doc_ids[:, :-1]
    t[:, :-1] = torch.where(same, ids[:, 1:], torch.full_like(ids[:, 1:], -100))
    return t


def test_gpt_packed_row_trains_like_its_documents_apart():
    """Loss and gradients of a packed row equal those of its documents run one by one
    (`.loss`: the fused CE returns `.ce` detached; z_loss is 0, so they are equal)."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=512, d_model=256, n_layers=2, n_heads=4, n_kv_heads=2,
                      ffn_hidden=512, max_seq_len=256)  # fmt: skip
    model = GPT(cfg).to(DEVICE)
    ids = torch.randint(0, 512, (1, 256), device=DEVICE)
    docs = _doc_ids(256, [100])  # 100 + 156 tokens: the boundary is inside the first block
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        packed = model(ids, targets=_targets(ids, docs), doc_ids=docs)
    n_packed = int((_targets(ids, docs) != -100).sum())
    packed_grads = torch.autograd.grad(packed.loss * n_packed, list(model.parameters()))

    total, n_apart = 0.0, 0
    for part in (slice(0, 100), slice(100, 256)):
        sub = ids[:, part]
        t = _targets(sub, torch.zeros_like(sub))
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            out = model(sub, targets=t)
        n = int((t != -100).sum())
        total, n_apart = total + out.loss * n, n_apart + n
    apart_grads = torch.autograd.grad(total, list(model.parameters()))

    # the same row without doc_ids lets document 2 attend to document 1: the yardstick
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        leaky = model(ids, targets=_targets(ids, docs))
    leaky_grads = torch.autograd.grad(leaky.loss * n_packed, list(model.parameters()))

    assert n_packed == n_apart
    torch.testing.assert_close(packed.loss * n_packed, total, rtol=1e-2, atol=1e-2)
    errors = [_rel_err(g, r) for g, r in zip(packed_grads, apart_grads, strict=True)]
    leaks = [_rel_err(g, r) for g, r in zip(leaky_grads, apart_grads, strict=True)]
    assert max(errors) < 5e-2, errors
    assert max(errors) < 0.2 * max(leaks), (errors, leaks)
