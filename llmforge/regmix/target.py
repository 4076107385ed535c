"""The regression target of a proxy: a weighted mean of its per-domain validation losses."""

from __future__ import annotations

from llmforge.errors import BadInput


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


def proxy_target(result: dict, weights: dict[str, float]) -> float:
    """sum_d w_d * val_loss_d of one proxy result (lower is better)."""
    losses = result["val_loss_per_domain"]
    missing = sorted(set(weights) - set(losses))
    if missing:
        raise BadInput(
            f"proxy {result.get('name')}: no validation loss for {missing}; does the tokens "
            "artifact have a val split with documents of every target domain?"
        )
    return float(sum(w * losses[d] for d, w in weights.items()))
