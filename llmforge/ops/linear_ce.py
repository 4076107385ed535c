"""Linear + cross-entropy without materialising the [tokens x vocab] logits.

The tokens are processed in chunks of `chunk_size` rows. Each chunk's logits are built,
reduced to two numbers per row (logsumexp and the target logit), turned into the logits'
gradient in place and multiplied back into gradients for `hidden` and `weight`; then the
chunk is freed. Peak extra memory is O(chunk_size x V) instead of O(N x V).

Two gradient modes, both in one `torch.autograd.Function`:

- eager: when per-token log-probs are not asked for, the gradients for a unit upstream
  gradient are computed during the forward pass (one matmul less than recomputing) and
  scaled in backward. This is what the pretraining loss uses.
- recompute: when the log-probs are returned and may be differentiated (DPO, GRPO), the
  forward keeps only logsumexp per row and the backward rebuilds each chunk's logits.

Per row i, with p = softmax(final logits) and e_t the one-hot of the target, the gradient
of the final logits is `(a_i + b_i) * p - a_i * e_t`, where a_i collects the CE and
log-prob terms and b_i the z-loss term. `_ChunkMath` computes the per-chunk pieces; it
has a torch backend (here) and a Triton backend (`llmforge.kernels.cross_entropy`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from llmforge.errors import BadInput
from llmforge.ops.dispatch import use_triton
from llmforge.ops.reference import transform_logits


class LinearCEOutput(NamedTuple):
    """Loss plus its parts and (optionally) per-token log-probs of the targets."""

    loss: Tensor  # ce + z_loss * z, differentiable
    ce: Tensor  # cross-entropy part, detached
    z: Tensor  # mean (or sum) of logsumexp^2 over non-ignored rows, detached
    logprobs: Tensor | None  # log p(target) per row, 0 at ignored rows, differentiable


class _Opts(NamedTuple):
    ignore_index: int
    z_loss: float
    softcap: float | None
    temperature: float
    reduction: str
    chunk_size: int


class _ChunkMath(NamedTuple):
    """Per-chunk math on fp32 raw logits: (stats, grad_) functions of one backend."""

    stats: Callable[..., tuple[Tensor, Tensor]]  # (logits, targets, softcap, temperature)
    grad_: Callable[..., Tensor]  # (logits, targets, lse, a, b, softcap, temperature)


_ROWS = 128  # torch path: temporaries cover at most this many rows of a chunk


def _torch_stats(logits, targets, softcap, temperature):
    lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    tgt = torch.empty_like(lse)
    for rows in _chunks(logits.shape[0], _ROWS):
        final = transform_logits(logits[rows], softcap, temperature)
        lse[rows] = torch.logsumexp(final, dim=-1)
        tgt[rows] = final.gather(1, targets[rows, None]).squeeze(1)
    return lse, tgt


def _torch_grad_(logits, targets, lse, a, b, softcap, temperature):
    """Overwrite raw logits with d(objective)/d(raw logits), a block of rows at a time."""
    for rows in _chunks(logits.shape[0], _ROWS):
        _torch_grad_rows_(
            logits[rows], targets[rows], lse[rows], a[rows], b[rows], softcap, temperature
        )
    return logits


def _torch_grad_rows_(logits, targets, lse, a, b, softcap, temperature):
    tanh = None
    if softcap is not None:
        tanh = torch.tanh(logits / softcap)
        logits.copy_(tanh).mul_(softcap)
    if temperature != 1.0:
        logits.div_(temperature)
    grad = logits.sub_(lse[:, None]).exp_().mul_((a + b)[:, None])  # softmax * (a + b)
    grad.scatter_add_(1, targets[:, None], -a[:, None])
    if temperature != 1.0:
        grad.div_(temperature)
    if tanh is not None:
        grad.mul_(tanh.square_().neg_().add_(1.0))


_TORCH_MATH = _ChunkMath(_torch_stats, _torch_grad_)


def _chunk_math(hidden: Tensor, weight: Tensor) -> _ChunkMath:
    if use_triton(hidden, weight):
        from llmforge.kernels import cross_entropy

        return _ChunkMath(cross_entropy.ce_stats, cross_entropy.ce_grad_)
    return _TORCH_MATH


class _Grads:
    """Accumulates the gradients of hidden, weight and bias over chunks (weight in fp32)."""

    def __init__(self, hidden, weight, bias, need_h, need_w, need_b):
        self.h = torch.empty_like(hidden) if need_h else None
        self.w = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        )
        self.b = (
            torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device)
            if need_b
            else None
        )
        self.weight = weight

    def add(self, rows: slice, h_chunk: Tensor, dlogits: Tensor) -> None:
        dlogits_lp = dlogits.to(h_chunk.dtype)
        if self.h is not None:
            torch.mm(dlogits_lp, self.weight, out=self.h[rows])
        if self.w is not None:
            if self.w.dtype == dlogits_lp.dtype:
                self.w.addmm_(dlogits_lp.t(), h_chunk)
            else:  # add_ promotes in place: no fp32 copy of the [V, H] product (2 GB at 128k)
                self.w.add_(dlogits_lp.t() @ h_chunk)
        if self.b is not None:
            self.b += dlogits.sum(0)

    def result(self, bias_dtype):
        w = None if self.w is None else self.w.to(self.weight.dtype)
        b = None if self.b is None else self.b.to(bias_dtype)
        return self.h, w, b


def _row_weights(valid: Tensor, reduction: str) -> tuple[Tensor, Tensor]:
    """Per-row weight of the CE and z terms (valid / n_valid for mean), and the divisor."""
    denom = valid.sum().clamp(min=1).float() if reduction == "mean" else torch.ones(())
    return valid.float() / denom.to(valid.device), denom


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _chunk_logits(hidden, weight, bias, rows) -> Tensor:
    return F.linear(hidden[rows], weight, bias).float()


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, opts: _Opts, eager: bool, grad_on: bool):
        math = _chunk_math(hidden, weight)
        valid = targets != opts.ignore_index
        safe_t = torch.where(valid, targets, torch.zeros_like(targets))
        row_w, denom = _row_weights(valid, opts.reduction)
        lse = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        tgt = torch.empty_like(lse)
        need = [grad_on and t is not None and t.requires_grad for t in (hidden, weight, bias)]
        grads = _Grads(hidden, weight, bias, *need) if eager and any(need) else None
        for rows in _chunks(hidden.shape[0], opts.chunk_size):
            logits = _chunk_logits(hidden, weight, bias, rows)
            lse[rows], tgt[rows] = math.stats(logits, safe_t[rows], opts.softcap, opts.temperature)
            if grads is not None:
                a = row_w[rows]
                b = 2.0 * opts.z_loss * lse[rows] * a
                args = (safe_t[rows], lse[rows], a, b, opts.softcap, opts.temperature)
                grads.add(rows, hidden[rows], math.grad_(logits, *args))
            del logits
        logprobs = torch.where(valid, tgt - lse, torch.zeros_like(lse))
        ce = -logprobs.sum() / denom
        z = (lse.square() * valid).sum() / denom
        loss = ce + opts.z_loss * z
        ctx.mark_non_differentiable(ce, z)
        ctx.eager, ctx.opts, ctx.bias_dtype = eager, opts, None if bias is None else bias.dtype
        if eager:
            ctx.mark_non_differentiable(logprobs)
            ctx.grads = grads.result(ctx.bias_dtype) if grads is not None else (None,) * 3
        else:
            ctx.save_for_backward(hidden, weight, bias, safe_t, lse, row_w)
        return loss, ce, z, logprobs

    @staticmethod
    def backward(ctx, g_loss, _g_ce, _g_z, g_logprobs):
        if ctx.eager:
            # Hand the grads over (autograd then adopts them without a copy) and drop ours.
            grads, ctx.grads = ctx.grads, None
            if grads is None:
                raise RuntimeError(
                    "linear_cross_entropy: a second backward through the same loss; its grads "
                    "were computed in forward and are released after the first backward"
                )
            return (*_scaled(grads, g_loss), None, None, None, None)
        hidden, weight, bias, safe_t, lse, row_w = ctx.saved_tensors
        opts, math = ctx.opts, _chunk_math(hidden, weight)
        a_all = g_loss * row_w
        if g_logprobs is not None:
            a_all = a_all - g_logprobs * (row_w > 0)
        b_all = 2.0 * opts.z_loss * g_loss * lse * row_w
        need = ctx.needs_input_grad[:3]
        grads = _Grads(hidden, weight, bias, *need)
        for rows in _chunks(hidden.shape[0], opts.chunk_size):
            logits = _chunk_logits(hidden, weight, bias, rows)
            args = (
                safe_t[rows],
                lse[rows],
                a_all[rows],
                b_all[rows],
                opts.softcap,
                opts.temperature,
            )
            grads.add(rows, hidden[rows], math.grad_(logits, *args))
            del logits
        return (*grads.result(ctx.bias_dtype), None, None, None, None)


def _scaled(grads, g_loss: Tensor):
    """Eager grads times the upstream gradient; no copy for the usual `loss.backward()`."""
    if bool(g_loss == 1.0):
        return grads
    return tuple(None if g is None else g * g_loss.to(g.dtype) for g in grads)


def _check_args(hidden, weight, targets, bias, opts: _Opts) -> None:
    if hidden.shape[-1] != weight.shape[-1] or weight.dim() != 2:
        raise BadInput(
            f"linear_cross_entropy: hidden {tuple(hidden.shape)} does not match "
            f"weight {tuple(weight.shape)} (expected [..., H] and [V, H])"
        )
    if hidden.shape[:-1] != targets.shape:
        raise BadInput(
            f"linear_cross_entropy: targets {tuple(targets.shape)} must match "
            f"hidden's leading dims {tuple(hidden.shape[:-1])}"
        )
    if bias is not None and bias.shape != weight.shape[:1]:
        raise BadInput(f"linear_cross_entropy: bias {tuple(bias.shape)} must be [V]")
    if opts.reduction not in ("mean", "sum"):
        raise BadInput(f"linear_cross_entropy: reduction {opts.reduction!r} is not 'mean' or 'sum'")
    if (
        opts.chunk_size < 1
        or opts.temperature <= 0
        or (opts.softcap is not None and opts.softcap <= 0)
    ):
        raise BadInput("linear_cross_entropy: chunk_size, temperature and softcap must be > 0")


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    ignore_index: int = -100,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    reduction: str = "mean",
    chunk_size: int = 2048,
    return_logprobs: bool = False,
) -> LinearCEOutput:
    """Cross-entropy of `hidden @ weight.T (+ bias)` against `targets`, chunked over tokens.

    hidden [N, H] (or [..., H]), weight [V, H], targets [N] (or [...]). Final logits are
    `softcap * tanh(logits / softcap)` (if softcap) divided by `temperature`. Rows whose
    target is `ignore_index` count for nothing. "mean" divides the CE and the z-loss term by
    the number of non-ignored rows; "sum" divides by nothing, so both terms stay on the
    same scale either way.
    """
    opts = _Opts(ignore_index, float(z_loss), softcap, float(temperature), reduction, chunk_size)
    _check_args(hidden, weight, targets, bias, opts)
    shape = targets.shape
    hidden2d, targets1d = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    eager, grad_on = not return_logprobs, torch.is_grad_enabled()
    loss, ce, z, logprobs = _LinearCE.apply(hidden2d, weight, bias, targets1d, opts, eager, grad_on)
    return LinearCEOutput(loss, ce, z, logprobs.view(shape) if return_logprobs else None)
