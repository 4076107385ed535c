"""Building preference pairs with llmforge's own generators.

Two recipes:

- delta learning (OLMo 3): the same prompt answered by a strong and a weak model; the
  strong completion is chosen and the weak one rejected. The pair teaches the *difference*
  between the two, which is useful even when neither answer is perfect.
- verifier pairs: one model samples k completions per task; a verifier reward scores
  them; the best-scoring completion is chosen and the worst rejected, and prompts whose
  samples all score alike give no pair. A task's gold `solution`, when it has one, is a
  candidate for chosen too, so even one greedy sample gives a pair wherever the model is
  wrong: the gold answer over the model's own mistake (SPIN's pairs, on-policy rejected).

Both return rows of the preference schema in docs/contract.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from llmforge.errors import BadInput


def delta_pairs(
    strong,
    weak,
    prompts: Sequence,
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    seed: int = 0,
    ids: Sequence[str] | None = None,
) -> list[dict]:
    """Pairs from a strong and a weak `Generator` answering the same prompts.

    Prompts where both models write the same text carry no preference and are skipped.
    """
    kwargs = dict(n=1, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    good = strong.generate(list(prompts), **kwargs)
    bad = weak.generate(list(prompts), **kwargs)
    rows = []
    for i, (prompt, g, b) in enumerate(zip(prompts, good, bad, strict=True)):
        chosen, rejected = g[0].text.strip(), b[0].text.strip()
        if chosen and chosen != rejected:
            row_id = ids[i] if ids is not None else f"delta-{i:06d}"
            rows.append({"id": row_id, "prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def verifier_pairs(
    generator,
    tasks: Sequence[Mapping],
    reward,
    *,
    k: int = 4,
    max_new_tokens: int = 128,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[dict]:
    """Pairs from k sampled completions per task, ranked by a verifier `Reward`.

    `tasks` follow the task schema (`prompt`, `reference`, `verifier`, ...); a task's
    optional `solution` joins the candidates for chosen (a correct sample wins a tie with
    it), while rejected is always one of the model's own samples.
    """
    if k < 2 and not all(t.get("solution") for t in tasks):
        raise BadInput("verifier pairs need k >= 2 samples per prompt, or a 'solution' per task")
    prompts = [task_prompt(t) for t in tasks]
    samples = generator.generate(
        prompts, n=k, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed
    )
    rows = []
    for task, prompt, completions in zip(tasks, prompts, samples, strict=True):
        texts = [c.text.strip() for c in completions]
        lengths = [len(c.token_ids) for c in completions]
        if task.get("solution"):
            texts.append(str(task["solution"]).strip())
            lengths.append(None)
        scores = [s.value for s in reward.batch(texts, [task] * len(texts), lengths)]
        picked = best_and_worst(scores, texts, rejectable=k)
        if picked is not None:
            best, worst = picked
            rows.append(
                {
                    "id": str(task.get("id", len(rows))),
                    "prompt": prompt,
                    "chosen": texts[best],
                    "rejected": texts[worst],
                    "score_chosen": scores[best],
                    "score_rejected": scores[worst],
                }
            )
    return rows


def best_and_worst(scores: Sequence[float], texts: Sequence[str],
                   rejectable: int | None = None) -> tuple[int, int] | None:  # fmt: skip
    """Indices of the best- and worst-scoring samples, or None when they tie (in score or
    in text), since such a pair carries no preference. Only the first `rejectable` (default:
    all) may be the worst: a gold solution appended after the model's samples can only win."""
    best = max(range(len(scores)), key=lambda j: scores[j])
    worst = min(range(rejectable or len(scores)), key=lambda j: scores[j])
    if scores[best] > scores[worst] and texts[best] != texts[worst]:
        return best, worst
    return None


def task_prompt(task: Mapping):
    """A task's prompt as the generator takes it: messages for chat tasks, else raw text."""
    prompt = task.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise BadInput(f"task {task.get('id', '?')} has no 'prompt' string")
    if task.get("chat", True):
        return [{"role": "user", "content": prompt}]
    return prompt
