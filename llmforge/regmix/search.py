"""The regmix procedure end to end, for the stage to call: data statistics, proposals,
proxy tasks, the fit, the solve, confirmation runs and the published payload.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmforge import log
from llmforge.data.tokens import TokenStore
from llmforge.regmix import proposals as props
from llmforge.regmix import proxies, regression, solver
from llmforge.regmix.config import FitConfig, ProxyConfig, ProxySlurmConfig
from llmforge.regmix.plots import report_png
from llmforge.regmix.target import Target, proxy_target

MIXTURE_FILE = "mixture.json"
PROXIES_FILE = "proxies.jsonl"
PLOT_FILE = "regmix.png"


@dataclass(frozen=True)
class DataStats:
    domains: list[str]
    tokens: dict[str, int]  # training tokens per domain
    vocab_size: int


def data_stats(paths: list[Path]) -> DataStats:
    """Training tokens per domain over the train split of every tokens input."""
    stores = [TokenStore(p, "train") for p in paths]
    domains = list(dict.fromkeys(d for s in stores for d in s.domains))
    tokens = dict.fromkeys(domains, 0)
    for s in stores:
        for d, n in s.domain_tokens().items():
            tokens[d] += n
    return DataStats(domains, tokens, max(s.vocab_size for s in stores))


class ProxyRunner:
    """Writes proxy tasks for token-share mixtures and trains them locally or on Slurm."""

    def __init__(self, folder: Path, paths: list[Path], prior: props.Prior, proxy: ProxyConfig,
                 slurm: ProxySlurmConfig, vocab_size: int, eval_spec: dict | None = None):  # fmt: skip
        self.folder, self.paths, self.prior = folder, paths, prior
        self.proxy, self.slurm, self.vocab_size = proxy, slurm, vocab_size
        self.eval_spec = eval_spec

    def task(self, name: str, shares: np.ndarray) -> Path:
        weights = props.as_dict(self.prior.domains, shares, 8)
        return proxies.write_task(self.folder, name, weights, self.paths, self.proxy,
                                  self.vocab_size, self.eval_spec)  # fmt: skip

    def train(self, tasks: list[Path]) -> list[dict]:
        if self.slurm.enabled:
            proxies.run_slurm(tasks, self.slurm, self.proxy.threads, self.folder)
        else:
            proxies.run_local(tasks, self.proxy.workers, self.proxy.threads)
        return [proxies.read_result(t) for t in tasks]


def features(results: list[dict], domains: list[str]) -> np.ndarray:
    return np.array([[r["weights"].get(d, 0.0) for d in domains] for r in results])


def fit_and_solve(results: list[dict], target: Target, prior: props.Prior,
                  fit_cfg: FitConfig, samples: int, top_k: int, seed: int):  # fmt: skip
    """(fit, chosen token shares, targets of the proxies)."""
    x = features(results, prior.domains)
    y = np.array([proxy_target(r, target) for r in results])
    fit = regression.fit(x, y, fit_cfg)
    rng = np.random.default_rng([seed, 1])
    chosen, _ = solver.solve(fit.predict, prior, samples, top_k, rng)
    return fit, chosen, y


def write_payload(out_dir: Path, payload: dict, results: list[dict], y: np.ndarray,
                  fit: regression.Fit, domains: list[str],
                  mixtures: dict[str, np.ndarray]) -> None:  # fmt: skip
    """mixture.json (the weights pretrain reads, plus how they were found), proxies.jsonl
    (every proxy with its target and cross-validated predictions) and the plot."""
    (out_dir / MIXTURE_FILE).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    with open(out_dir / PROXIES_FILE, "w", encoding="utf-8") as f:
        for i, r in enumerate(results):
            cv = {m: float(p[i]) for m, p in fit.cv_predictions.items()}
            f.write(json.dumps({**r, "target": float(y[i]), "cv_prediction": cv}) + "\n")
    report_png(out_dir / PLOT_FILE, y, fit.cv_predictions, fit.quality, fit.name, domains,
               mixtures)  # fmt: skip
    log.info(f"wrote {MIXTURE_FILE}, {PROXIES_FILE} and {PLOT_FILE}")
