"""Causal self-attention behind one function, with intra-document masking for packed rows.

`attention(q, k, v, mask, softcap)` picks the kernel:

| case                                  | CUDA                  | CPU                          |
| ------------------------------------- | --------------------- | ---------------------------- |
| plain causal, no softcap              | SDPA `is_causal=True` | SDPA `is_causal=True`        |
| documents packed in a row (`doc_ids`) | FlexAttention         | SDPA + bool [B,1,S,S] mask   |
| attention logit soft-capping          | FlexAttention         | eager (materialised scores)  |

FlexAttention refuses backward on CPU (torch 2.13), hence the SDPA mask path for CPU
training; SDPA has no hook for soft-capping the scores, hence the eager path. All paths
take grouped-query K/V (fewer KV heads than query heads) without repeating them, except
the eager one, which is the readable reference the others are tested against.

`max_logits(q, k, mask)` is the per-head largest logit that MuonClip (train/qk_clip.py)
reads; the model computes it only while that probe is switched on.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Backend = Literal["auto", "sdpa", "flex", "eager"]


def segment_ids(doc_ids: Tensor) -> Tensor:
    """Number the contiguous runs of equal `doc_ids` in each row 0, 1, 2, ... ([B, S] long).

    Working on runs rather than raw ids means a row [5, 5, 7, 5] holds three documents,
    so a reused id never joins two separate documents.
    """
    starts = torch.ones_like(doc_ids, dtype=torch.long)
    starts[:, 1:] = (doc_ids[:, 1:] != doc_ids[:, :-1]).long()
    return starts.cumsum(dim=1) - 1


def document_positions(doc_ids: Tensor) -> Tensor:
    """RoPE positions that restart at 0 at the first token of every document ([B, S])."""
    seq = torch.arange(doc_ids.shape[1], device=doc_ids.device).expand_as(doc_ids)
    is_start = torch.ones_like(doc_ids, dtype=torch.bool)
    is_start[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    start = torch.where(is_start, seq, torch.zeros_like(seq)).cummax(dim=1).values
    return seq - start


class CausalMask:
    """The attention mask of one batch: causal, and within a document when `doc_ids` is given.

    Built once per forward pass and shared by all layers; the dense and block forms are
    computed on first use only.
    """

    def __init__(self, seq_len: int, doc_ids: Tensor | None = None, device=None):
        self.seq_len = seq_len
        self.segments = segment_ids(doc_ids) if doc_ids is not None else None
        self.device = doc_ids.device if doc_ids is not None else torch.device(device or "cpu")

    @cached_property
    def dense(self) -> Tensor:
        """Boolean mask, True where attending is allowed: [B or 1, 1, S, S]."""
        return self.rows(0, self.seq_len)

    def rows(self, start: int, end: int) -> Tensor:
        """The dense mask of queries start..end-1 over keys 0..end-1: [B or 1, 1, end-start, end]."""
        q_idx = torch.arange(start, end, device=self.device)
        kv_idx = torch.arange(end, device=self.device)
        allowed = (q_idx[:, None] >= kv_idx[None, :])[None, None]
        if self.segments is not None:
            same_doc = self.segments[:, start:end, None] == self.segments[:, None, :end]
            allowed = allowed & same_doc[:, None]
        return allowed

    @cached_property
    def block(self):
        """FlexAttention BlockMask for the same pattern."""
        from torch.nn.attention.flex_attention import create_block_mask

        segments = self.segments

        def causal(b, h, q_idx, kv_idx):
            return q_idx >= kv_idx

        def causal_same_doc(b, h, q_idx, kv_idx):
            return (q_idx >= kv_idx) & (segments[b, q_idx] == segments[b, kv_idx])

        if segments is None:
            return create_block_mask(causal, None, None, self.seq_len, self.seq_len, self.device)
        batch = segments.shape[0]
        return create_block_mask(
            causal_same_doc, batch, None, self.seq_len, self.seq_len, self.device
        )


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: CausalMask | None = None,
    softcap: float | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Causal attention. q [B, H, S, D]; k, v [B, Hkv, S, D] with H % Hkv == 0.

    `softcap` applies `softcap * tanh(score / softcap)` to the scaled scores before the
    softmax (Gemma 2 style). Returns [B, H, S, D].
    """
    mask = mask or CausalMask(q.shape[2], device=q.device)
    if backend == "auto":
        backend = _pick_backend(q, mask, softcap)
    if backend == "eager":
        return eager_attention(q, k, v, mask, softcap)
    if backend == "flex":
        return _flex_attention(q, k, v, mask, softcap)
    if softcap is not None:
        raise ValueError("SDPA cannot soft-cap attention scores; use backend 'flex' or 'eager'")
    gqa = k.shape[1] != q.shape[1]
    if mask.segments is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense, enable_gqa=gqa)


def _pick_backend(q: Tensor, mask: CausalMask, softcap: float | None) -> Backend:
    needs_more_than_sdpa = softcap is not None or mask.segments is not None
    if q.is_cuda and needs_more_than_sdpa:
        return "flex"
    return "eager" if softcap is not None else "sdpa"


def eager_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: CausalMask, softcap: float | None = None
) -> Tensor:
    """Reference attention: repeat K/V per group, materialise the scores, softmax in fp32."""
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(q.shape[-1])
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    scores = scores.masked_fill(~mask.dense, float("-inf"))
    return (scores.softmax(dim=-1).to(v.dtype)) @ v


@torch.no_grad()
def max_logits(q: Tensor, k: Tensor, mask: CausalMask, chunk: int = 512) -> Tensor:
    """Each head's largest attention logit q.k / sqrt(d) over the allowed pairs: [H] fp32.

    The probe MuonClip reads (Kimi K2's S_max). It recomputes Q K^T in blocks of `chunk`
    queries (causal: block i needs keys up to its end only), so memory stays at
    B x H x chunk x S whatever the kernel the attention itself used. Soft-capping, if any,
    comes after this logit.
    """
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1).float()
    best = torch.full((q.shape[1],), float("-inf"), device=q.device)
    for start in range(0, q.shape[2], chunk):
        end = min(start + chunk, q.shape[2])
        scores = q[:, :, start:end].float() @ k[:, :, :end].transpose(-2, -1)
        scores = scores.masked_fill(~mask.rows(start, end), float("-inf"))
        best = torch.maximum(best, scores.amax(dim=(0, 2, 3)))
    return best / math.sqrt(q.shape[-1])


_compiled_flex = None


def _flex_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: CausalMask, softcap: float | None
) -> Tensor:
    """FlexAttention with a block-sparse mask; compiled on CUDA, eager (forward only) on CPU."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    fn = flex_attention
    if q.is_cuda:
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention, dynamic=False)
        fn = _compiled_flex
    score_mod = None
    if softcap is not None:

        def score_mod(score, b, h, q_idx, kv_idx):
            return softcap * torch.tanh(score / softcap)

    gqa = k.shape[1] != q.shape[1]
    return fn(q, k, v, score_mod=score_mod, block_mask=mask.block, enable_gqa=gqa)
