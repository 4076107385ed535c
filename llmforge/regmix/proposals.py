"""Random mixtures for the proxies and the solver: a Dirichlet prior centred on the natural
token shares, restricted by per-domain caps and a maximum number of epochs per domain.

A domain with few tokens cannot take a large weight without being repeated many times, so
its cap is `max_epochs * tokens_d / budget` (RegMix and OLMo cap repetition the same way).
Samples over a cap are rejected, so accepted ones follow the prior restricted to the
feasible set; that set is convex, so averages of feasible mixtures stay feasible.

Mixtures are *token shares* (the share of training tokens from each domain), as in RegMix
and as the pretrain loader reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmforge.errors import BadInput

MAX_ROUNDS = 200


@dataclass(frozen=True)
class Prior:
    """The proposal distribution over mixtures of `domains`."""

    domains: list[str]
    natural: np.ndarray  # natural token shares, sums to 1
    concentration: list[float]
    upper: np.ndarray  # largest token share per domain (caps and epochs combined)

    def to_dict(self) -> dict:
        return {
            "kind": "dirichlet",
            "alpha": "c * n_domains * natural",
            "concentration": list(self.concentration),
            "natural": dict(zip(self.domains, self.natural.round(6).tolist())),
            "upper": dict(zip(self.domains, self.upper.round(6).tolist())),
        }


def upper_bounds(
    domain_tokens: dict[str, int], budget: int, max_epochs: float, caps: dict[str, float]
) -> np.ndarray:
    """Largest weight per domain: its cap, and at most `max_epochs` passes over its tokens."""
    domains = list(domain_tokens)
    unknown = sorted(set(caps) - set(domains))
    if unknown:
        raise BadInput(f"config key 'proposals.caps': unknown domain(s) {unknown}; have {domains}")
    tokens = np.array([domain_tokens[d] for d in domains], dtype=np.float64)
    epochs = np.minimum(max_epochs * tokens / max(budget, 1), 1.0)
    cap = np.array([caps.get(d, 1.0) for d in domains])
    upper = np.minimum(epochs, cap)
    if upper.sum() < 1 - 1e-9:
        detail = ", ".join(f"{d} <= {u:.3g}" for d, u in zip(domains, upper))
        raise BadInput(
            f"no mixture fits the caps and max_epochs ({detail}; they sum to "
            f"{upper.sum():.3g} < 1): raise proposals.max_epochs or caps, or lower the budget"
        )
    return upper


def make_prior(
    domain_tokens: dict[str, int],
    budget: int,
    concentration: list[float],
    max_epochs: float,
    caps: dict[str, float],
) -> Prior:
    tokens = np.array(list(domain_tokens.values()), dtype=np.float64)
    if tokens.sum() <= 0 or (tokens <= 0).any():
        empty = [d for d, n in domain_tokens.items() if n <= 0]
        raise BadInput(f"every domain needs training tokens; empty: {empty}")
    upper = upper_bounds(domain_tokens, budget, max_epochs, caps)
    return Prior(list(domain_tokens), tokens / tokens.sum(), list(concentration), upper)


def with_budget(prior: Prior, domain_tokens: dict[str, int], budget: int, max_epochs: float,
                caps: dict[str, float]) -> Prior:  # fmt: skip
    """The same prior with the epoch caps of another token budget (the real run's)."""
    upper = upper_bounds(domain_tokens, budget, max_epochs, caps)
    return Prior(prior.domains, prior.natural, prior.concentration, upper)


def as_dict(domains: list[str], w: np.ndarray, digits: int = 6) -> dict[str, float]:
    """A weight vector as {domain: weight}, rounded, still summing to 1."""
    w = np.round(np.asarray(w, dtype=np.float64), digits)
    w[np.argmax(w)] += 1.0 - w.sum()
    return {d: float(x) for d, x in zip(domains, w)}


def sample(prior: Prior, n: int, rng: np.random.Generator) -> np.ndarray:
    """[n, D] feasible mixtures; sample i uses concentration[i % len(concentration)]."""
    cs = np.array(prior.concentration)[np.arange(n) % len(prior.concentration)]
    out = np.empty((n, len(prior.domains)))
    todo = np.arange(n)
    base = np.maximum(prior.natural * len(prior.domains), 1e-6)
    for _ in range(MAX_ROUNDS):
        alpha = cs[todo, None] * base[None, :]
        draws = _dirichlet(alpha, rng)
        ok = (draws <= prior.upper + 1e-12).all(axis=1)
        out[todo[ok]] = draws[ok]
        todo = todo[~ok]
        if len(todo) == 0:
            return out
    # The prior puts almost no mass on the feasible set: project the rest into it.
    out[todo] = [project(d, prior.upper) for d in _dirichlet(cs[todo, None] * base, rng)]
    return out


def _dirichlet(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row-wise Dirichlet draws via normalised gammas (numpy's takes one alpha vector only)."""
    g = rng.gamma(alpha)
    total = g.sum(axis=1, keepdims=True)
    bad = total[:, 0] <= 0  # all gammas underflowed (tiny alpha): fall back to one vertex
    g[bad] = np.eye(alpha.shape[1])[alpha[bad].argmax(axis=1)]
    return g / g.sum(axis=1, keepdims=True)


def project(w: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Clip `w` to `upper` and hand the excess to the unclipped domains in proportion."""
    w = np.asarray(w, dtype=np.float64).copy()
    for _ in range(len(w) + 1):
        over = w > upper
        if not over.any():
            break
        excess = (w[over] - upper[over]).sum()
        w[over] = upper[over]
        room = ~over & (w < upper)
        share = w[room] if w[room].sum() > 0 else np.ones(room.sum())
        w[room] += excess * share / share.sum()
    return w / w.sum()
