"""The regmix stage: a tokens artifact with several domains to a `mixture` artifact.

    llmforge regmix TOKENS -c recipes/tiny/regmix.yaml -o artifacts/mixture
    llmforge regmix TOKENS -s proposals.n_proxies=512 -s slurm.enabled=true   # job array
    llmforge regmix TOKENS eval=EVAL -s 'target.metrics={loss.per_domain.math.bpb: 1}'

RegMix (arXiv 2407.01492): train K small proxy models on random mixtures drawn from a
Dirichlet around the natural token shares (within per-domain caps and epoch limits), fit a
regression from mixture to target (validation loss, and/or metrics of an eval artifact's
suite run on every proxy), and publish the mixture the fitted
model likes best (the mean of the top-k of many scored samples). Proxy results live in
the run's work directory, so a re-run after a crash trains only the missing proxies.
See docs/stages/regmix.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmforge import log
from llmforge.artifact import Run
from llmforge.config import param
from llmforge.errors import BadInput
from llmforge.regmix import proposals as props
from llmforge.regmix.config import (
    FitConfig,
    ProposalConfig,
    ProxyConfig,
    ProxySlurmConfig,
    SolveConfig,
    TargetConfig,
)
from llmforge.regmix.evalsuite import check_metrics, suite_spec
from llmforge.regmix.search import ProxyRunner, data_stats, fit_and_solve, write_payload
from llmforge.regmix.target import Target, proxy_target, target_weights
from llmforge.stage import Inputs, Role, Stage


@dataclass(frozen=True)
class Config:
    proposals: ProposalConfig = param(ProposalConfig(), "how proxy mixtures are drawn")
    proxy: ProxyConfig = param(ProxyConfig(), "proxy model and training")
    target: TargetConfig = param(TargetConfig(), "what the mixture minimises")
    fit: FitConfig = param(FitConfig(), "regression and cross-validation")
    solve: SolveConfig = param(SolveConfig(), "search over mixtures with the fitted model")
    slurm: ProxySlurmConfig = param(ProxySlurmConfig(), "train proxies as a Slurm job array")
    confirm: bool = param(
        False, "train one more proxy on the chosen and one on the natural mixture and compare"
    )


def run(cfg: Config, inputs: Inputs, out: Run) -> dict:
    paths = [r.path for r in inputs.all("tokens")]
    stats = data_stats(paths)
    p = cfg.proposals
    prior = props.make_prior(stats.tokens, cfg.proxy.tokens, p.concentration, p.max_epochs,
                             p.caps)  # fmt: skip
    target = Target(target_weights(cfg.target.domain_weights, stats.domains),
                    cfg.target.loss_weight, cfg.target.metrics)  # fmt: skip
    runner = ProxyRunner(out.work / "proxies", paths, prior, cfg.proxy, cfg.slurm,
                         stats.vocab_size, eval_suite(cfg, inputs, paths[0]))  # fmt: skip
    shares = props.sample(prior, p.n_proxies, np.random.default_rng([p.seed, 0]))
    tasks = [runner.task(f"{i:04d}", s) for i, s in enumerate(shares)]
    results = runner.train(tasks)
    solve_prior = prior
    if cfg.solve.target_tokens:
        solve_prior = props.with_budget(prior, stats.tokens, cfg.solve.target_tokens,
                                        p.max_epochs, p.caps)  # fmt: skip
    fit, chosen, y = fit_and_solve(results, target, solve_prior, cfg.fit, cfg.solve.samples,
                                   cfg.solve.top_k, p.seed)  # fmt: skip
    uniform = np.full(len(stats.domains), 1 / len(stats.domains))
    mixtures = {"chosen": chosen, "natural": prior.natural, "uniform": uniform}
    predicted = {k: float(fit.predict(v[None])[0]) for k, v in mixtures.items()}
    metrics = summary(fit, predicted, y, results, stats.domains, chosen)
    metrics["target"] = target.describe()["kind"]
    if cfg.confirm:
        metrics["confirm"] = confirm(runner, target, chosen, prior.natural)
    payload = {
        "weights": props.as_dict(stats.domains, chosen),
        "weights_are": "token shares (the share of training tokens from each domain)",
        "prior": {**prior.to_dict(), "solver_upper": props.as_dict(
            stats.domains, solve_prior.upper) if cfg.solve.target_tokens else None},
        "target": target.describe(),
        **{k: metrics[k] for k in ("fit", "model", "predicted_target")},
        "confirm": metrics.get("confirm"),
    }  # fmt: skip
    write_payload(out.dir, payload, results, y, fit, stats.domains, mixtures)
    return metrics


def summary(fit, predicted, y, results, domains, chosen) -> dict:
    """Metrics for the manifest: fit quality, predictions, proxy costs, the chosen shares."""
    log.info(
        "cross-validated fit: "
        + ", ".join(f"{m} rho={q['spearman']:.3f} MAE={q['mae']:.4f}" for m, q in fit.quality.items())
        + f"; solving with {fit.name}"
    )  # fmt: skip
    return {
        "n_proxies": len(results),
        "proxy_params": results[0]["params"],
        "proxy_tokens": results[0]["tokens"],
        "proxy_seconds_mean": float(np.mean([r["seconds"] for r in results])),
        "target_range": [float(y.min()), float(y.max())],
        "fit": fit.quality,
        "model": fit.name,
        "spearman": fit.quality[fit.name]["spearman"],
        "predicted_target": predicted,
        "weights": props.as_dict(domains, chosen),
    }


def eval_suite(cfg: Config, inputs: Inputs, tokens: Path) -> dict | None:
    """The eval= artifact's suite as a proxy task spec, after checking the target metrics."""
    ref = inputs.get("eval")
    if ref is None:
        if cfg.target.metrics:
            raise BadInput(
                "config key 'target.metrics' needs an eval= input: the eval artifact whose "
                "suite is run on every proxy"
            )
        return None
    if not cfg.target.metrics:
        raise BadInput(
            f"eval={ref.path} is given but 'target.metrics' is empty: name the metrics to "
            "target, e.g. -s 'target.metrics={loss.per_domain.math.bpb: 1}'"
        )
    check_metrics(cfg.target.metrics, ref.path)
    return suite_spec(ref, tokens / "tokenizer")


def confirm(runner: ProxyRunner, target: Target, chosen: np.ndarray, natural: np.ndarray) -> dict:
    """Train one proxy on the chosen and one on the natural mixture; report their targets."""
    tasks = [runner.task("confirm-chosen", chosen), runner.task("confirm-natural", natural)]
    results = runner.train(tasks)
    got = [proxy_target(r, target) for r in results]
    per_domain = {k: r["val_loss_per_domain"] for k, r in zip(("chosen", "natural"), results)}
    verdict = {"chosen": got[0], "natural": got[1], "chosen_beats_natural": got[0] < got[1],
               "per_domain": per_domain}  # fmt: skip
    word = "beats" if verdict["chosen_beats_natural"] else "does NOT beat"
    log.info(f"confirmation: chosen {got[0]:.4f} {word} natural {got[1]:.4f}")
    return verdict


STAGE = Stage(
    name="regmix",
    kind="mixture",
    config=Config,
    run=run,
    roles={
        "tokens": Role(kinds=("tokens",), min=1, max=None, help="multi-domain data"),
        "eval": Role(
            kinds=("eval",),
            min=0,
            max=1,
            help="eval artifact whose suite runs on every proxy (target.metrics)",
        ),
    },
    default_role="tokens",
    help="Find the data mixture with small proxy models and a regression (RegMix).",
)
