"""The chunked linear cross-entropy (torch path) against the naive logits path.

Tolerances: fp32 loss and gradients within 1e-5 (abs) / 1e-4 (rel); bf16 within 2e-2,
where both paths round the same bf16 matmuls but sum over chunks in a different order.
"""

from __future__ import annotations

import pytest
import torch

from llmforge.errors import BadInput
from llmforge.ops import linear_ce as lce_module
from llmforge.ops import linear_cross_entropy, linear_cross_entropy_reference

N, H, V = 29, 12, 37  # odd sizes: chunks of 8 leave a partial last chunk
OPTIONS = [
    {},
    {"z_loss": 1e-2},
    {"softcap": 3.0, "temperature": 0.7, "z_loss": 1e-3},
    {"reduction": "sum", "z_loss": 0.1},
]


def _tol(dtype):
    return {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}


def _inputs(dtype, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, H, generator=g).to(dtype).requires_grad_()
    w = torch.randn(V, H, generator=g).to(dtype).requires_grad_()
    b = torch.randn(V, generator=g).to(dtype).requires_grad_() if bias else None
    t = torch.randint(0, V, (N,), generator=g)
    t[::4] = -100
    return h, w, b, t


def _clone(*xs):
    return [None if x is None else x.detach().clone().requires_grad_() for x in xs]


def _grads(obj, tensors):
    return torch.autograd.grad(obj, [t for t in tensors if t is not None])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("logprobs", [False, True])
def test_matches_naive_loss_and_grads(dtype, opts, logprobs):
    h, w, b, t = _inputs(dtype)
    weights = torch.linspace(-1.0, 1.0, N)  # an upstream gradient on the log-probs
    out = linear_cross_entropy(h, w, t, bias=b, chunk_size=8, return_logprobs=logprobs, **opts)
    obj = out.loss + (out.logprobs * weights).sum() if logprobs else out.loss
    h2, w2, b2 = _clone(h, w, b)
    loss, ce, z, lp = linear_cross_entropy_reference(h2, w2, t, bias=b2, **opts)
    obj2 = loss + (lp * weights).sum() if logprobs else loss
    tol = _tol(dtype)
    torch.testing.assert_close(out.loss, loss, **tol)
    torch.testing.assert_close(out.ce, ce.detach(), **tol)
    torch.testing.assert_close(out.z, z.detach(), **tol)
    if logprobs:
        torch.testing.assert_close(out.logprobs, lp, **tol)
        assert torch.all(out.logprobs[t == -100] == 0)
    for got, want in zip(_grads(obj, (h, w, b)), _grads(obj2, (h2, w2, b2)), strict=True):
        torch.testing.assert_close(got, want, **tol)


def test_ignored_rows_get_zero_hidden_grad():
    h, w, _, t = _inputs(torch.float32, bias=False)
    (gh,) = torch.autograd.grad(linear_cross_entropy(h, w, t, chunk_size=8).loss, h)
    assert torch.all(gh[t == -100] == 0)
    assert torch.all(gh[t != -100].abs().sum(-1) > 0)


def test_all_ignored_gives_zero_loss_and_finite_grads():
    h, w, _, t = _inputs(torch.float32, bias=False)
    out = linear_cross_entropy(h, w, torch.full_like(t, -100), z_loss=1e-2)
    gh, gw = torch.autograd.grad(out.loss, (h, w))
    assert out.loss.item() == 0.0
    assert torch.all(gh == 0) and torch.all(gw == 0)


def test_frozen_weight_only_hidden_gets_grad():
    h, w, _, t = _inputs(torch.float32, bias=False)
    w = w.detach()
    out = linear_cross_entropy(h, w, t, chunk_size=8)
    out.loss.backward()
    assert h.grad is not None and w.grad is None


def test_upstream_gradient_scales_eager_grads():
    h, w, _, t = _inputs(torch.float32, bias=False)
    (g1,) = torch.autograd.grad(linear_cross_entropy(h, w, t).loss, h)
    (g3,) = torch.autograd.grad(3.0 * linear_cross_entropy(h, w, t).loss, h)
    torch.testing.assert_close(g3, 3.0 * g1)


def test_second_backward_through_eager_loss_is_a_clear_error():
    h, w, _, t = _inputs(torch.float32, bias=False)
    loss = linear_cross_entropy(h, w, t).loss
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward"):
        loss.backward()


def test_leading_dims_are_flattened_and_logprobs_keep_target_shape():
    h, w, _, t = _inputs(torch.float32, bias=False)
    out = linear_cross_entropy(
        h[:28].reshape(4, 7, H), w, t[:28].reshape(4, 7), return_logprobs=True
    )
    flat = linear_cross_entropy(h[:28], w, t[:28], return_logprobs=True)
    assert out.logprobs.shape == (4, 7)
    torch.testing.assert_close(out.loss, flat.loss)


def test_never_builds_more_than_chunk_size_rows_of_logits(monkeypatch):
    seen = []
    original = lce_module._chunk_logits

    def spy(hidden, weight, bias, rows):
        logits = original(hidden, weight, bias, rows)
        seen.append(logits.shape[0])
        return logits

    monkeypatch.setattr(lce_module, "_chunk_logits", spy)
    h, w, _, t = _inputs(torch.float32, bias=False)
    out = linear_cross_entropy(h, w, t, chunk_size=8, return_logprobs=True)
    out.logprobs.sum().backward()
    assert max(seen) == 8 and sum(seen) == 2 * N  # forward pass + recompute in backward


def test_no_grad_skips_gradient_work():
    h, w, _, t = _inputs(torch.float32, bias=False)
    with torch.no_grad():
        out = linear_cross_entropy(h, w, t)
    assert not out.loss.requires_grad
    torch.testing.assert_close(out.loss, linear_cross_entropy_reference(h, w, t)[0].detach())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"targets": torch.zeros(5, dtype=torch.long)}, "targets"),
        ({"weight": torch.randn(V, H + 1)}, "weight"),
        ({"reduction": "avg"}, "reduction"),
        ({"softcap": 0.0}, "softcap"),
    ],
)
def test_bad_arguments_raise_bad_input(kwargs, match):
    h, w, _, t = _inputs(torch.float32, bias=False)
    args = {"hidden": h, "weight": w, "targets": t} | kwargs
    with pytest.raises(BadInput, match=match):
        linear_cross_entropy(**args)
