"""Validation loss and bits-per-byte per domain, on a tokens artifact's val split or raw text.

Each domain's documents (each ending in eos) are laid end to end and cut into windows of
`seq_len + 1` tokens that overlap by one, so every token but the first is predicted once.
Loss is the mean cross-entropy in nats per predicted token; bits-per-byte is the summed
loss in bits over the UTF-8 bytes of the decoded text, which makes models with different
tokenizers comparable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from llmforge import log
from llmforge.errors import BadInput


@dataclass(frozen=True)
class LossConfig:
    """Window length, batch size and how much of each domain to read."""

    seq_len: int = 256
    batch_size: int = 8
    max_tokens: int = 100_000
    lengths: tuple[int, ...] = ()  # also the overall loss at these window lengths
    beyond_context: bool = False  # run lengths past the model's declared context


def windows(stream: np.ndarray, seq_len: int) -> list[np.ndarray]:
    """Windows of seq_len + 1 tokens overlapping by one; the last may be shorter."""
    out = []
    for start in range(0, max(len(stream) - 1, 0), seq_len):
        out.append(stream[start : start + seq_len + 1])
    return out


@torch.inference_mode()
def sum_nll(model, chunks: list[np.ndarray], batch_size: int, bar=None) -> tuple[float, int]:
    """Summed next-token negative log-likelihood (nats) and the number of predicted tokens."""
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, len(chunks), batch_size):
        batch = chunks[start : start + batch_size]
        width = max(len(c) for c in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, c in enumerate(batch):
            ids[row, : len(c)] = torch.as_tensor(c.astype(np.int64))
            mask[row, : len(c)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        targets = ids[:, 1:].to(device)
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
        ).view_as(targets)
        keep = mask[:, 1:].to(device).bool()
        total += float(nll[keep].sum())
        count += int(keep.sum())
        if bar is not None:
            bar.advance(len(batch))
    return total, count


def domain_loss(model, docs: Iterable[np.ndarray], n_bytes: int, cfg: LossConfig, bar=None) -> dict:
    """Loss, perplexity and bits-per-byte of one domain's token documents."""
    stream = np.concatenate(list(docs)) if docs else np.zeros(0, dtype=np.int64)
    chunks = windows(stream, cfg.seq_len)
    if not chunks:
        return {"tokens": 0, "bytes": n_bytes, "loss": None, "bpb": None}
    nats, count = sum_nll(model, chunks, cfg.batch_size, bar)
    loss = nats / count
    return {
        "tokens": count,
        "bytes": n_bytes,
        "loss": loss,
        "ppl": math.exp(min(loss, 50.0)),
        "bpb": nats / math.log(2) / n_bytes if n_bytes else None,
    }


def _take(docs: list[np.ndarray], max_tokens: int) -> list[np.ndarray]:
    kept, used = [], 0
    for doc in docs:
        if used >= max_tokens:
            break
        kept.append(doc[: max_tokens - used])
        used += len(kept[-1])
    return kept


def tokens_docs(tokenizer, store, max_tokens: int) -> dict[str, list[np.ndarray]]:
    """Each domain's documents (at most `max_tokens`) from a `TokenStore`."""
    if tokenizer.vocab_size and store.vocab_size > len(tokenizer):
        raise BadInput(
            f"tokens artifact has vocab {store.vocab_size}, model tokenizer "
            f"{len(tokenizer)}: they were not made with the same tokenizer",
            path=str(store.root),
        )
    return {d: _take([store.doc(i) for i in store.docs_in(d)], max_tokens) for d in store.domains}


def text_docs(tokenizer, texts_by_domain: dict[str, list[str]], max_tokens: int) -> dict:
    """Each domain's raw texts tokenized with the model's tokenizer (eos after each)."""
    eos = tokenizer.eos_token_id
    per_domain = {}
    for domain, texts in texts_by_domain.items():
        docs = []
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            docs.append(np.asarray(ids + ([eos] if eos is not None else []), dtype=np.int64))
        per_domain[domain] = _take(docs, max_tokens)
    return per_domain


def tokens_loss(model, tokenizer, store, cfg: LossConfig) -> dict[str, dict]:
    """Per-domain loss and bits-per-byte on a `TokenStore` (the val split of a tokens artifact)."""
    return by_domain(model, tokenizer, tokens_docs(tokenizer, store, cfg.max_tokens), cfg)


def text_loss(
    model, tokenizer, texts_by_domain: dict[str, list[str]], cfg: LossConfig
) -> dict[str, dict]:
    """Per-domain loss and bits-per-byte on raw texts, tokenized with the model's tokenizer."""
    return by_domain(model, tokenizer, text_docs(tokenizer, texts_by_domain, cfg.max_tokens), cfg)


def by_domain(
    model, tokenizer, per_domain: dict[str, list[np.ndarray]], cfg: LossConfig
) -> dict[str, dict]:
    """Loss and bits-per-byte of each domain's documents, in windows of `cfg.seq_len`."""
    total = sum(len(windows(np.concatenate(d), cfg.seq_len)) for d in per_domain.values() if d)
    out = {}
    with log.progress("loss", total=total) as bar:
        for domain, docs in per_domain.items():
            n_bytes = sum(
                len(tokenizer.decode(d.tolist(), skip_special_tokens=True).encode()) for d in docs
            )
            out[domain] = domain_loss(model, docs, n_bytes, cfg, bar)
    return out


def overall(per_domain: dict[str, dict]) -> dict:
    """Token-weighted loss and byte-weighted bits-per-byte over all domains."""
    rows = [r for r in per_domain.values() if r["loss"] is not None]
    tokens = sum(r["tokens"] for r in rows)
    if not tokens:
        return {"tokens": 0, "loss": None, "bpb": None}
    nats = sum(r["loss"] * r["tokens"] for r in rows)
    n_bytes = sum(r["bytes"] for r in rows)
    return {
        "tokens": tokens,
        "bytes": n_bytes,
        "loss": nats / tokens,
        "bpb": nats / math.log(2) / n_bytes if n_bytes else None,
    }
