"""The regression target: weighted validation loss plus weighted eval metrics."""

import pytest

from llmforge.errors import BadInput, ConfigError
from llmforge.regmix.config import TargetConfig
from llmforge.regmix.target import Target, metric_paths, metric_value, proxy_target

ENTRY = {
    "stage": "pretrain",
    "loss": {"per_domain": {"math": {"loss": 1.5, "bpb": 0.75, "tokens": 100}}},
    "tasks": {"sums": {"all": {"avg@4": 0.25, "pass@1": 0.25}, "parseable_rate": 0.5}},
    "long_context": {"passkey": {"128": {"logprob": -9.0, "trials": 2}}},
}
RESULT = {"name": "0003", "val_loss_per_domain": {"math": 2.0, "code": 4.0}, "eval": ENTRY}


def test_metric_paths_list_every_number_and_lookup_follows_them():
    paths = metric_paths(ENTRY)
    assert "loss.per_domain.math.bpb" in paths and "tasks.sums.all.avg@4" in paths
    assert "long_context.passkey.128.logprob" in paths and "stage" not in paths
    assert all(isinstance(metric_value(ENTRY, p, "x"), float) for p in paths)
    assert metric_value(ENTRY, "tasks.sums.all.avg@4", "x") == 0.25


def test_an_unknown_metric_names_the_nearest_paths():
    with pytest.raises(BadInput, match=r"target.metrics.*did you mean loss.per_domain.math.bpb"):
        metric_value(ENTRY, "loss.per_domain.math.bbp", "eval artifact E")
    with pytest.raises(BadInput, match="no number at 'loss.per_domain'"):
        metric_value(ENTRY, "loss.per_domain", "eval artifact E")


def test_target_combines_loss_and_signed_metrics():
    loss_only = Target({"math": 0.5, "code": 0.5})
    assert proxy_target(RESULT, loss_only) == pytest.approx(3.0)
    mixed = Target({"math": 1.0}, 0.5, {"loss.per_domain.math.bpb": 2.0,
                                        "tasks.sums.all.avg@4": -1.0})  # fmt: skip
    assert proxy_target(RESULT, mixed) == pytest.approx(0.5 * 2.0 + 2 * 0.75 - 0.25)
    metrics_only = Target({"math": 1.0}, 0.0, {"long_context.passkey.128.logprob": -1.0})
    assert proxy_target(RESULT, metrics_only) == pytest.approx(9.0)


def test_a_proxy_without_eval_results_cannot_be_scored_on_metrics():
    result = {k: v for k, v in RESULT.items() if k != "eval"}
    with pytest.raises(BadInput, match="no eval results"):
        proxy_target(result, Target({"math": 1.0}, 1.0, {"loss.per_domain.math.bpb": 1.0}))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"loss_weight": 0.0}, "loss_weight"),
        ({"loss_weight": -1.0}, "loss_weight"),
        ({"metrics": {"tasks.sums.all.avg@4": 0.0}}, "metrics.tasks.sums.all.avg@4"),
    ],
)
def test_impossible_targets_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        TargetConfig(**kwargs)
