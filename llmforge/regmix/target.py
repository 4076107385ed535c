"""The regression target of a proxy: weighted validation loss plus weighted eval metrics."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from llmforge.errors import BadInput


@dataclass(frozen=True)
class Target:
    """A resolved TargetConfig: normalised domain weights and the metric weights."""

    domain_weights: dict[str, float]
    loss_weight: float = 1.0
    metrics: dict[str, float] | None = None

    def describe(self) -> dict:
        kind = []
        if self.loss_weight:
            kind.append("val loss")
        if self.metrics:
            kind.append("eval metrics")
        return {"kind": " + ".join(kind), "domain_weights": self.domain_weights,
                "loss_weight": self.loss_weight, "metrics": self.metrics or {}}  # fmt: skip


def target_weights(domain_weights: dict[str, float], domains: list[str]) -> dict[str, float]:
    """Normalised loss weights; empty config means equal weight on every domain."""
    if not domain_weights:
        return {d: 1 / len(domains) for d in domains}
    unknown = sorted(set(domain_weights) - set(domains))
    if unknown:
        raise BadInput(
            f"config key 'target.domain_weights': unknown domain(s) {unknown}; have {domains}"
        )
    total = sum(domain_weights.values())
    return {d: w / total for d, w in domain_weights.items() if w > 0}


def proxy_target(result: dict, target: Target) -> float:
    """The target of one proxy result (lower is better)."""
    value = 0.0
    if target.loss_weight:
        value += target.loss_weight * _weighted_loss(result, target.domain_weights)
    for path, weight in (target.metrics or {}).items():
        if "eval" not in result:
            raise BadInput(f"proxy {result.get('name')}: no eval results for metric '{path}'")
        value += weight * metric_value(result["eval"], path, f"proxy {result.get('name')}")
    return float(value)


def _weighted_loss(result: dict, weights: dict[str, float]) -> float:
    losses = result["val_loss_per_domain"]
    missing = sorted(set(weights) - set(losses))
    if missing:
        raise BadInput(
            f"proxy {result.get('name')}: no validation loss for {missing}; does the tokens "
            "artifact have a val split with documents of every target domain?"
        )
    return sum(w * losses[d] for d, w in weights.items())


def metric_paths(entry: dict, prefix: str = "") -> list[str]:
    """Every dotted path to a number in a results.json model entry."""
    paths = []
    for key, value in entry.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            paths.extend(metric_paths(value, path + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            paths.append(path)
    return paths


def metric_value(entry: dict, path: str, where: str) -> float:
    """The number at a dotted path of a results.json model entry; BadInput names near paths."""
    node: object = entry
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, int | float) and not isinstance(node, bool):
        return float(node)
    known = metric_paths(entry)
    near = difflib.get_close_matches(path, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(near)}?" if near else f"; have {', '.join(known[:12])}"
    raise BadInput(f"config key 'target.metrics': {where} has no number at '{path}'{hint}")
