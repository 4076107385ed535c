"""The `correct` reward: picks the verifier each sample names in its `verifier` field."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from llmforge.errors import BadInput
from llmforge.verifiers.base import REGISTRY, Reward, Score, register

VERIFIERS = ("math", "exact", "numeric", "code", "format", "ifeval", "judge")


@register("correct")
class Correct(Reward):
    """Route each sample to `sample["verifier"]` (default `default`); batch by verifier."""

    def __init__(self, default: str = "math", options: Mapping[str, Mapping] | None = None):
        if default not in VERIFIERS:
            raise BadInput(f"correct: default verifier must be one of {VERIFIERS}")
        self.default = default
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self._built: dict[str, Reward] = {}

    def verifier(self, name: str) -> Reward:
        if name not in VERIFIERS:
            raise BadInput(f"unknown verifier '{name}'; expected one of {VERIFIERS}")
        if name not in self._built:
            self._built[name] = REGISTRY[name](**self.options.get(name, {}))
        return self._built[name]

    def __call__(self, completion: str, sample: Mapping, length: int | None = None) -> Score:
        return self.batch([completion], [sample], [length])[0]

    def batch(self, completions: Sequence[str], samples: Sequence[Mapping], lengths=None):
        lengths = lengths if lengths is not None else [None] * len(completions)
        groups: dict[str, list[int]] = {}
        for i, sample in enumerate(samples):
            groups.setdefault(sample.get("verifier") or self.default, []).append(i)
        scores: list[Score] = [Score(0.0)] * len(completions)
        for name, idx in groups.items():
            got = self.verifier(name).batch(
                [completions[i] for i in idx], [samples[i] for i in idx], [lengths[i] for i in idx]
            )
            for i, score in zip(idx, got, strict=True):
                scores[i] = score
        return scores
