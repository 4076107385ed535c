"""Long-context probes: passkey retrieval and needle-in-a-haystack at a range of lengths.

The haystack is our own filler: sentences drawn with a seeded RNG from a fixed list (no
downloaded essays). A needle holding a secret (a 5-digit passkey, or a word) sits at a
chosen depth; the prompt ends with a question whose answer is the secret. For every
(length, depth, trial) we record:

- `correct`: greedy decoding starts with the secret (accuracy against length);
- `logprob`: the log-likelihood of the secret's tokens after the prompt;
- `rank`: the secret's rank by log-likelihood among itself and `distractors` wrong
  secrets (1 is best; chance is (distractors + 2) / 2).

Tiny models score accuracy 0 everywhere, but log-likelihood and rank still move, which
is what shows a context-extension stage working.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from llmforge import log

FILLER = (
    "The grass is green.",
    "The sky is blue.",
    "The sun is warm today.",
    "Here we go again.",
    "There and back again.",
    "The river runs to the sea.",
    "A bird sings in the tree.",
    "The road is long and quiet.",
    "Clouds drift over the hills.",
    "The old mill turns slowly.",
)
WORDS = (
    "lantern",
    "harbor",
    "meadow",
    "copper",
    "violet",
    "falcon",
    "orchard",
    "granite",
    "saffron",
    "willow",
    "ember",
    "glacier",
)


@dataclass(frozen=True)
class ProbeConfig:
    """Which probes, at which lengths (prompt tokens) and depths, with how many trials."""

    probes: tuple[str, ...] = ("passkey", "needle")
    lengths: tuple[int, ...] = (64, 128, 256)
    depths: tuple[float, ...] = (0.0, 0.5, 1.0)
    trials: int = 2
    distractors: int = 4
    seed: int = 0
    beyond_context: bool = False  # also probe lengths past the declared context


@dataclass(frozen=True)
class Probe:
    """One probe kind: how a needle reads, what is asked, how a secret is drawn."""

    name: str
    needle: str
    question: str

    def secret(self, rng: random.Random) -> str:
        if self.name == "passkey":
            return str(rng.randint(10000, 99999))
        return rng.choice(WORDS)


PROBES = {
    "passkey": Probe(
        "passkey",
        "The pass key is {s}. Remember it. {s} is the pass key.",
        "What is the pass key? The pass key is",
    ),
    "needle": Probe(
        "needle",
        "The special magic word is {s}.",
        "What is the special magic word? The special magic word is",
    ),
}


def haystack_prompt(
    tokenizer, probe: Probe, secret: str, length: int, depth: float, rng: random.Random
) -> list[int]:
    """Token ids of filler with the needle at `depth`, then the question; about `length` long."""
    needle = " " + probe.needle.format(s=secret)
    question = " " + probe.question
    fixed = len(tokenizer(needle + question, add_special_tokens=False)["input_ids"])
    # Sentences are tokenized once each; with a leading space BPE lengths add up closely.
    cost = {s: len(tokenizer(" " + s, add_special_tokens=False)["input_ids"]) for s in FILLER}
    sentences: list[str] = []
    used = 0
    while True:
        pick = rng.choice(FILLER)
        if used + cost[pick] > length - fixed:
            break
        sentences.append(pick)
        used += cost[pick]
    cut = round(depth * len(sentences))
    text = " ".join(sentences[:cut]) + needle + " " + " ".join(sentences[cut:]) + question
    return tokenizer(text.strip(), add_special_tokens=False)["input_ids"]


@torch.inference_mode()
def continuation_logprobs(model, prompt: list[int], continuations: list[list[int]]) -> list[float]:
    """Summed log-probability of each continuation after the prompt, in one padded batch."""
    width = len(prompt) + max(len(c) for c in continuations)
    ids = torch.zeros((len(continuations), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, cont in enumerate(continuations):
        seq = prompt + cont
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    logp = torch.log_softmax(logits, dim=-1).cpu()
    out = []
    for row, cont in enumerate(continuations):
        positions = range(len(prompt) - 1, len(prompt) - 1 + len(cont))
        out.append(float(sum(logp[row, p, t] for p, t in zip(positions, cont))))
    return out


@torch.inference_mode()
def greedy(model, prompt: list[int], n_tokens: int, pad_id: int = 0) -> list[int]:
    """Greedy continuation of `n_tokens` tokens (no sampling: retrieval is all-or-nothing)."""
    ids = torch.tensor([prompt], device=next(model.parameters()).device)
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=n_tokens,
        min_new_tokens=n_tokens,
        pad_token_id=pad_id,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    return out[0, len(prompt) :].tolist()


def run_trial(
    model, tokenizer, probe: Probe, length: int, depth: float, rng: random.Random, distractors: int
) -> dict:
    """One haystack: accuracy, log-likelihood and rank of the secret."""
    secret = probe.secret(rng)
    wrong: list[str] = []
    while len(wrong) < distractors:
        other = probe.secret(rng)
        if other != secret and other not in wrong:
            wrong.append(other)
    prompt = haystack_prompt(tokenizer, probe, secret, length, depth, rng)
    conts = [tokenizer(" " + s, add_special_tokens=False)["input_ids"] for s in [secret, *wrong]]
    scores = continuation_logprobs(model, prompt, conts)
    rank = 1 + sum(s > scores[0] for s in scores[1:])
    said = tokenizer.decode(
        greedy(model, prompt, len(conts[0]) + 1, tokenizer.pad_token_id or 0),
        skip_special_tokens=True,
    )
    return {
        "probe": probe.name,
        "length": length,
        "prompt_tokens": len(prompt),
        "depth": depth,
        "secret": secret,
        "output": said,
        "correct": said.strip().startswith(secret),
        "logprob": scores[0],
        "rank": rank,
    }


def max_length(model) -> int | None:
    """The longest context the model's config declares, if it declares one."""
    return getattr(model.config, "max_position_embeddings", None)


def run_probes(model, tokenizer, cfg: ProbeConfig) -> tuple[list[dict], dict]:
    """Every trial record, and the per-probe summary by length (skipping lengths too long)."""
    limit = max_length(model)
    lengths = [n for n in cfg.lengths if cfg.beyond_context or limit is None or n + 16 <= limit]
    skipped = [n for n in cfg.lengths if n not in lengths]
    if skipped:
        log.warn(f"long-context probes skip lengths {skipped}: the model's context is {limit}")
    records = []
    total = len(cfg.probes) * len(lengths) * len(cfg.depths) * cfg.trials
    with log.progress("long-context", total=total) as bar:
        for name in cfg.probes:
            rng = random.Random(f"{cfg.seed}-{name}")
            for length in lengths:
                for depth in cfg.depths:
                    for _ in range(cfg.trials):
                        records.append(
                            run_trial(
                                model, tokenizer, PROBES[name], length, depth, rng, cfg.distractors
                            )
                        )
                        bar.advance()
    return records, summarize(records, skipped, cfg.distractors)


def summarize(records: list[dict], skipped: list[int], distractors: int) -> dict:
    """Per probe: accuracy, mean log-likelihood and mean rank at each length."""
    out: dict = {"skipped_lengths": skipped, "chance_rank": (distractors + 2) / 2}
    for probe in sorted({r["probe"] for r in records}):
        rows = [r for r in records if r["probe"] == probe]
        by_len = {}
        for length in sorted({r["length"] for r in rows}):
            at = [r for r in rows if r["length"] == length]
            by_len[str(length)] = {
                "accuracy": sum(r["correct"] for r in at) / len(at),
                "logprob": sum(r["logprob"] for r in at) / len(at),
                "rank": sum(r["rank"] for r in at) / len(at),
                "trials": len(at),
            }
        out[probe] = by_len
    return out
