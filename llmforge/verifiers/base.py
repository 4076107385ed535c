"""The reward plugin interface: a `Score` per completion, a registry by name, a weighted sum.

Every reward is a callable `reward(completion, sample, length=None) -> Score`. `sample` is one
row of the task/RL-prompt schema (docs/contract.md: `prompt`, `reference`, `tests`,
`verifier`, ...); `length` is the completion's length in tokens when the caller knows it.
`Score.parseable` says whether a final answer could be extracted at all; the RL loop masks
unparseable trajectories out of the loss (Motif-2) instead of teaching on them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from llmforge.errors import BadInput


@dataclass(frozen=True)
class Score:
    """One reward value; `parts` holds the per-reward values of a weighted combination."""

    value: float
    parseable: bool = True
    parts: Mapping[str, float] = field(default_factory=dict)


class Reward(ABC):
    """Base class. Subclasses implement `__call__`; `batch` may run work in parallel."""

    name = "reward"

    @abstractmethod
    def __call__(self, completion: str, sample: Mapping, length: int | None = None) -> Score:
        """Score one completion for one sample."""

    def batch(
        self,
        completions: Sequence[str],
        samples: Sequence[Mapping],
        lengths: Sequence[int | None] | None = None,
    ) -> list[Score]:
        lengths = lengths if lengths is not None else [None] * len(completions)
        return [self(c, s, n) for c, s, n in zip(completions, samples, lengths, strict=True)]


REGISTRY: dict[str, Callable[..., Reward]] = {}


def register(name: str) -> Callable:
    """Class decorator: make a reward buildable by name from configs."""

    def wrap(cls):
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return wrap


def build(name: str, **options) -> Reward:
    """Build a registered reward; unknown names are a `BadInput` listing the known ones."""
    if name not in REGISTRY:
        raise BadInput(f"unknown reward '{name}'; known rewards: {', '.join(sorted(REGISTRY))}")
    try:
        return REGISTRY[name](**options)
    except TypeError as e:
        raise BadInput(f"bad options for reward '{name}': {e}") from None


class Weighted(Reward):
    """Weighted sum of rewards. Parseable only if every part found its answer."""

    name = "weighted"

    def __init__(self, parts: Mapping[str, tuple[float, Reward]]):
        if not parts:
            raise BadInput("a weighted reward needs at least one part")
        self.parts = dict(parts)

    def __call__(self, completion: str, sample: Mapping, length: int | None = None) -> Score:
        return self.batch([completion], [sample], [length])[0]

    def batch(self, completions, samples, lengths=None) -> list[Score]:
        per_part = {
            name: reward.batch(completions, samples, lengths)
            for name, (_, reward) in self.parts.items()
        }
        out = []
        for i in range(len(completions)):
            scores = {name: per_part[name][i] for name in self.parts}
            value = sum(self.parts[name][0] * s.value for name, s in scores.items())
            parseable = all(s.parseable for s in scores.values())
            out.append(Score(value, parseable, {n: s.value for n, s in scores.items()}))
        return out


def combine(weights: Mapping[str, float], options: Mapping[str, Mapping] | None = None) -> Weighted:
    """Build `Weighted` from `{reward_name: weight}` and optional `{reward_name: {opt: v}}`."""
    options = options or {}
    unknown = set(options) - set(weights)
    if unknown:
        raise BadInput(f"options given for rewards without a weight: {sorted(unknown)}")
    return Weighted({n: (float(w), build(n, **options.get(n, {}))) for n, w in weights.items()})
