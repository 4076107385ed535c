"""regmix with an eval artifact's metric as the target: the eval's suite runs on every
proxy, the target is the named figure, and bad eval inputs fail before any proxy trains."""

import json

import pytest

from llmforge import artifact
from llmforge.errors import BadInput
from llmforge.stage import execute
from stages.eval import STAGE as EVAL
from stages.regmix import STAGE
from tests.conftest import write_jsonl

pytestmark = pytest.mark.slow  # 6 proxies, each trained and evaluated: ~1 min on 2 cores

METRIC = "loss.per_domain.math.bpb"
TASK_METRIC = "tasks.sums.answer_bpb"
SETS = [
    "proposals.n_proxies=6",
    "proposals.concentration=[0.3]",
    "proxy.steps=12",
    "proxy.batch_size=4",
    "proxy.seq_len=32",
    "proxy.val_batches=1",
    "proxy.workers=2",
    "fit.folds=2",
    "fit.model=linear",
    "solve.samples=5000",
    "solve.top_k=50",
    "target.loss_weight=0",
    f"target.metrics={{{METRIC}: 1, {TASK_METRIC}: 0.5}}",
]


@pytest.fixture(scope="module")
def math_eval(tmp_path_factory, tiny_model, tiny_corpus):
    """An eval artifact measuring bits-per-byte on held-out math text (a text= input) and on
    the gold answers of a sums task (no sampling: the answer's bits-per-byte only)."""
    root = tmp_path_factory.mktemp("regmix-eval")
    held_out = root / "math.jsonl"
    rows = tiny_corpus["math"].read_text().splitlines()[-40:]
    held_out.write_text("\n".join(rows) + "\n")
    sums = [{"id": f"s{i}", "prompt": f"{i} + {2 * i} = {3 * i}. The answer is ",
             "reference": str(3 * i), "verifier": "math"} for i in range(20)]  # fmt: skip
    task = write_jsonl(root / "sums.jsonl", sums)
    sets = ["loss.seq_len=32", "loss.max_tokens=2000", "decontam.enabled=false", "report=false",
            "sample=false"]  # fmt: skip
    return execute(EVAL, [str(tiny_model), f"text={held_out}", f"task={task}"], sets=sets,
                   out=root / "eval")  # fmt: skip


@pytest.fixture(scope="module")
def mixture(tmp_path_factory, tiny_tokens, math_eval):
    out = tmp_path_factory.mktemp("regmix-eval-mix") / "mix"
    return execute(STAGE, [str(tiny_tokens), f"eval={math_eval}"], sets=SETS, out=out)


def test_every_proxy_is_evaluated_and_the_metric_is_its_target(mixture):
    rows = [json.loads(x) for x in (mixture / "proxies.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        bpb = row["eval"]["loss"]["per_domain"]["math"]["bpb"]
        answer = row["eval"]["tasks"]["sums"]["answer_bpb"]
        assert row["target"] == pytest.approx(bpb + 0.5 * answer) and 0 < bpb < 20
    # More math in the mixture, lower math bits-per-byte: the eval really saw each proxy.
    most = max(rows, key=lambda r: r["weights"].get("math", 0))
    least = min(rows, key=lambda r: r["weights"].get("math", 0))
    assert most["target"] < least["target"], (most, least)


def test_the_artifact_records_the_eval_target_and_prefers_math(mixture, math_eval):
    payload = json.loads((mixture / "mixture.json").read_text())
    assert payload["target"]["metrics"] == {METRIC: 1.0, TASK_METRIC: 0.5}
    assert payload["target"]["loss_weight"] == 0
    recorded = [i for i in artifact.read_manifest(mixture)["inputs"] if i["role"] == "eval"]
    assert [i["id"] for i in recorded] == [artifact.read_manifest(math_eval)["id"]]
    assert payload["weights"]["math"] > payload["prior"]["natural"]["math"]


def test_metrics_without_an_eval_input_or_not_in_it_are_bad_input(tmp_path, tiny_tokens,
                                                                  math_eval):  # fmt: skip
    with pytest.raises(BadInput, match="needs an eval= input"):
        execute(STAGE, [str(tiny_tokens)], sets=SETS, out=tmp_path / "a")
    typo = [*SETS[:-1], "target.metrics={loss.per_domain.math.bbp: 1}"]
    with pytest.raises(BadInput, match="did you mean loss.per_domain.math.bpb"):
        execute(STAGE, [str(tiny_tokens), f"eval={math_eval}"], sets=typo, out=tmp_path / "b")
    with pytest.raises(BadInput, match="'target.metrics' is empty"):
        execute(STAGE, [str(tiny_tokens), f"eval={math_eval}"], sets=SETS[:-2],
                out=tmp_path / "c")  # fmt: skip
    assert not list(tmp_path.glob("*/_work/proxies/*.json"))


def test_an_eval_whose_input_changed_is_refused(tmp_path, tiny_tokens, tiny_model):
    text = tmp_path / "math.jsonl"
    text.write_text('{"text": "1 + 1 = 2"}\n')
    sets = ["loss.seq_len=16", "decontam.enabled=false", "report=false"]
    ev = execute(EVAL, [str(tiny_model), f"text={text}"], sets=sets, out=tmp_path / "eval")
    text.write_text('{"text": "1 + 2 = 3"}\n')
    sets = [*SETS[:-1], f"target.metrics={{{METRIC}: 1}}"]
    with pytest.raises(BadInput, match="changed since the eval was made"):
        execute(STAGE, [str(tiny_tokens), f"eval={ev}"], sets=sets, out=tmp_path / "mix")
