"""Bits-per-byte of each task's gold answer given its prompt: a task score small models move.

A tiny or early model samples almost no correct answers, so avg@n sits at 0 and cannot
rank two models (or two RegMix proxies). OLMo 3 makes its small-scale data decisions on
the bits-per-byte of the correct answer instead, and so can we: for every plain-completion
row (`chat: false`) whose reference is an answer string (math, numeric and exact
verifiers), the gold completion is scored token by token after the prompt. Math answers
are scored as `\\boxed{REF}`, the form our data and verifiers use. Chat rows are left out:
a chat model reasons before it answers, so the likelihood of answering at once says little
about it; score base models on plain prompts that end where the answer starts. Lower is
better.
"""

from __future__ import annotations

import math

import torch

GOLD = {"math": "\\boxed{{{}}}", "numeric": "{}", "exact": "{}"}


def gold_text(row: dict) -> str | None:
    """The gold completion of a row; None for chat rows and rows without a string answer."""
    template, ref = GOLD.get(row["verifier"]), row.get("reference")
    if row["chat"] or template is None or not isinstance(ref, str):
        return None
    return template.format(ref)


def prompt_ids(tokenizer, row: dict) -> list[int]:
    """Token ids of a plain prompt (message contents joined when it is a message list)."""
    prompt = row["prompt"]
    text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def pairs(tokenizer, rows: list[dict], max_len: int) -> list[tuple[list[int], int, int]]:
    """(ids, answer start, answer bytes) per scorable row; long prompts lose their start."""
    out = []
    for row in rows:
        gold = gold_text(row)
        if gold is None:
            continue
        answer = tokenizer(gold, add_special_tokens=False)["input_ids"]
        context = prompt_ids(tokenizer, row)[-max(1, max_len - len(answer)) :]
        out.append((context + answer, len(context), len(gold.encode("utf-8"))))
    return out


@torch.inference_mode()
def answer_nll(model, batch: list[tuple[list[int], int, int]]) -> list[float]:
    """Summed negative log-likelihood (nats) of each answer given its context."""
    device = next(model.parameters()).device
    width = max(len(ids) for ids, _, _ in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, (seq, _, _) in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    token_logp = logp.gather(-1, ids[:, 1:].to(device)[..., None])[..., 0]
    # Position t predicts token t+1, so the answer's tokens are scored at start-1 .. len-2.
    return [float(-token_logp[r, start - 1 : len(seq) - 1].sum())
            for r, (seq, start, _) in enumerate(batch)]  # fmt: skip


def task_answer_bpb(model, tokenizer, rows: list[dict], batch_size: int = 16) -> dict:
    """{"answer_bpb", "answer_nll", "answer_items"} over the rows with a gold answer."""
    max_len = getattr(model.config, "max_position_embeddings", None) or 2048
    scored = pairs(tokenizer, rows, max_len)
    if not scored:
        return {}
    scored.sort(key=lambda p: len(p[0]))  # similar lengths share a batch: less padding
    nats = []
    for start in range(0, len(scored), batch_size):
        nats.extend(answer_nll(model, scored[start : start + batch_size]))
    n_bytes = sum(b for _, _, b in scored)
    return {
        "answer_bpb": sum(nats) / math.log(2) / n_bytes,
        "answer_nll": sum(nats) / len(nats),
        "answer_items": len(scored),
    }
