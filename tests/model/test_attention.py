"""Attention backends against a naive per-head loop; document masks and positions."""

import math

import pytest
import torch

from llmforge.model.attention import (
    CausalMask,
    attention,
    document_positions,
    segment_ids,
)


def naive_attention(q, k, v, doc_ids=None, softcap=None):
    """One head and one query at a time; KV head = query head // group size."""
    b, h, s, d = q.shape
    group = h // k.shape[1]
    out = torch.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            for i in range(s):
                keys = [j for j in range(i + 1) if doc_ids is None or _same_doc(doc_ids[bi], i, j)]
                kk, vv = k[bi, hi // group, keys], v[bi, hi // group, keys]
                scores = kk @ q[bi, hi, i] / math.sqrt(d)
                if softcap is not None:
                    scores = softcap * torch.tanh(scores / softcap)
                out[bi, hi, i] = scores.softmax(-1) @ vv
    return out


def _same_doc(row, i, j):
    return bool((row[j : i + 1] == row[i]).all())


def _qkv(b=2, h=4, kv=2, s=9, d=8):
    torch.manual_seed(0)
    return torch.randn(b, h, s, d), torch.randn(b, kv, s, d), torch.randn(b, kv, s, d)


pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

DOCS = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2], [3, 3, 3, 3, 3, 3, 4, 4, 4]])


@pytest.mark.parametrize("backend", ["sdpa", "eager", "flex"])
@pytest.mark.parametrize("kv", [1, 2, 4])
def test_gqa_backends_match_naive(backend, kv):
    q, k, v = _qkv(kv=kv)
    expected = naive_attention(q, k, v)
    got = attention(q, k, v, CausalMask(9), backend=backend)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["sdpa", "eager", "flex", "auto"])
def test_document_mask_matches_naive(backend):
    q, k, v = _qkv()
    expected = naive_attention(q, k, v, DOCS)
    got = attention(q, k, v, CausalMask(9, DOCS), backend=backend)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["eager", "flex", "auto"])
def test_softcap_matches_naive(backend):
    q, k, v = _qkv()
    q = q * 4  # large scores, so the cap matters
    expected = naive_attention(q, k, v, DOCS, softcap=2.0)
    got = attention(q, k, v, CausalMask(9, DOCS), softcap=2.0, backend=backend)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    uncapped = attention(q, k, v, CausalMask(9, DOCS), backend="eager")
    assert (got - uncapped).abs().max() > 1e-2


def test_sdpa_refuses_softcap():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="soft-cap"):
        attention(q, k, v, softcap=2.0, backend="sdpa")


def test_segments_split_reused_ids():
    ids = torch.tensor([[5, 5, 7, 5, 5]])
    assert segment_ids(ids).tolist() == [[0, 0, 1, 2, 2]]
    assert document_positions(ids).tolist() == [[0, 1, 0, 0, 1]]


def test_positions_restart_per_document():
    assert document_positions(DOCS).tolist() == [
        [0, 1, 2, 0, 1, 0, 1, 2, 3],
        [0, 1, 2, 3, 4, 5, 0, 1, 2],
    ]


def test_dense_mask_blocks_other_documents():
    dense = CausalMask(9, DOCS).dense
    assert dense.shape == (2, 1, 9, 9)
    assert dense[0, 0, 4, 3] and not dense[0, 0, 5, 4] and not dense[0, 0, 3, 4]


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="compiled FlexAttention backward needs CUDA"
)
def test_flex_backward_matches_eager_on_cuda():
    q, k, v = (t.cuda().requires_grad_() for t in _qkv(s=256, d=64))
    docs = torch.repeat_interleave(torch.arange(4), 64)[None].expand(2, -1).cuda()
    grads = []
    for backend in ("flex", "eager"):
        out = attention(q, k, v, CausalMask(256, docs), softcap=20.0, backend=backend)
        grads.append(torch.autograd.grad(out.square().sum(), (q, k, v)))
    for flex, eager in zip(*grads):
        torch.testing.assert_close(flex, eager, atol=2e-3, rtol=2e-3)
