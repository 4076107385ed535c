"""The engine in-process: optimizers, the step's guard, spike policies, checkpoint resume."""

import json

import pytest
import torch

from llmforge.data.labelled_tokens import make_tokens
from llmforge.data.loader import Batch
from llmforge.errors import RunFailed
from llmforge.train import checkpoint
from llmforge.train.callbacks import Checkpointer, MetricsLogger, SpikeGuard
from llmforge.train.config import OptimConfig, ScheduleConfig, SpikeConfig, TrainConfig
from llmforge.train.engine import train_model
from llmforge.train.loop import Loop
from llmforge.train.optim import build_optimizers
from llmforge.train.schedule import build_schedulers
from llmforge.train.step import train_step
from tests.train.engine_helpers import make_run, spec, tiny_loader, tiny_model


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return make_tokens(tmp_path_factory.mktemp("tok"), {"a": 40, "b": 40})


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_adamw_skips_decay_on_embeddings_and_norms():
    model = tiny_model()
    (opt,) = build_optimizers(model, OptimConfig(weight_decay=0.1))
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.embed_tokens.weight) in no_decay
    assert id(model.norm.weight) in no_decay
    assert id(model.layers[0].self_attn.q_proj.weight) not in no_decay


def test_muon_takes_hidden_matrices_and_trains(tokens):
    model = tiny_model()
    muon, adam = build_optimizers(model, OptimConfig(name="muon", lr=0.02))
    assert isinstance(muon, torch.optim.Muon)
    muon_ids = {id(p) for g in muon.param_groups for p in g["params"]}
    assert id(model.layers[0].mlp.up_proj.weight) in muon_ids
    assert id(model.embed_tokens.weight) not in muon_ids
    loader = tiny_loader(tokens)
    losses = [train_step(model, [muon, adam], [], [loader.next_batch()], precision="fp32").loss
              for _ in range(15)]  # fmt: skip
    assert losses[-1] < losses[0] - 0.3


def test_grad_accumulation_matches_one_big_batch(tokens):
    batch = tiny_loader(tokens, batch_size=4).next_batch()
    # Every position a target, so both halves hold the same number of target tokens and the
    # mean of the two micro-batch means is exactly the mean over the whole batch.
    batch = batch._replace(targets=torch.where(batch.targets == -100, 1, batch.targets))
    halves = [Batch(*(t[:2] for t in batch)), Batch(*(t[2:] for t in batch))]
    start = weights(tiny_model())
    results = []
    for micro in ([batch], halves):
        model = tiny_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        results.append((train_step(model, [opt], [], micro, precision="fp32"), weights(model)))
    (big, w_big), (acc, w_acc) = results
    assert acc.tokens == big.tokens == batch.targets.numel()
    assert acc.loss == pytest.approx(big.loss, rel=1e-5)
    assert acc.grad_norm == pytest.approx(big.grad_norm, rel=1e-4)
    moved = [k for k in start if not torch.equal(start[k], w_big[k])]
    assert len(moved) > len(start) // 2  # the step changed the weights...
    for k in start:  # ...and two half batches changed them exactly as the whole one did
        assert torch.allclose(w_acc[k], w_big[k], atol=1e-6), k


def test_guard_veto_leaves_weights_and_optimizer_untouched(tokens):
    model = tiny_model()
    opts = build_optimizers(model, OptimConfig())
    before = weights(model)
    result = train_step(model, opts, [], [tiny_loader(tokens).next_batch()], precision="fp32",
                        guard=lambda loss, norm: False)  # fmt: skip
    assert not result.stepped
    assert same(before, weights(model))
    assert not opts[0].state and all(p.grad is None for p in model.parameters())


def test_spike_guard_flags_nan_and_outliers():
    guard = SpikeGuard(SpikeConfig(factor=2.0, min_history=3))
    assert guard.guard(1.0, 1.0) and guard.guard(1.1, 1.0) and guard.guard(0.9, 1.0)
    assert guard.guard(1.9, 1.0)  # below 2 x median
    assert not guard.guard(2.5, 1.0)
    assert not guard.guard(float("nan"), 1.0)
    assert not guard.guard(1.0, float("inf"))
    assert guard.events == 3


class PoisonedLoader:
    """Wraps a loader; micro-batch `at` gets, as targets, the tokens the model finds least
    likely (a corrupt batch whose loss is far above anything seen so far)."""

    def __init__(self, inner, at: int, model):
        self.inner, self.at, self.model, self.count = inner, at, model, 0

    def next_batch(self):
        batch = self.inner.next_batch()
        self.count += 1
        if self.count == self.at:
            self.weights_before = weights(self.model)
            with torch.no_grad():
                logits = self.model(batch.inputs, doc_ids=batch.doc_ids).logits
            batch = batch._replace(targets=logits.argmin(dim=-1))
        return batch

    def __getattr__(self, name):
        return getattr(self.inner, name)


def run_loop(tokens, tmp_path, steps, policy, poison_at=None, ckpt_every=0):
    model = tiny_model()
    opts = build_optimizers(model, OptimConfig(lr=1e-2))
    scheds = build_schedulers(opts, ScheduleConfig(kind="constant", warmup_steps=0), steps)
    loader = tiny_loader(tokens)
    if poison_at:
        loader = PoisonedLoader(loader, poison_at, model)
    cfg = TrainConfig(steps=steps, batch_size=4, seq_len=32, precision="fp32")
    records = []
    callbacks = [SpikeGuard(SpikeConfig(policy=policy, factor=1.5, window=5, min_history=5)),
                 MetricsLogger(1, 1.0, 0.0), Checkpointer(ckpt_every)]  # fmt: skip
    loop = Loop(model, model, opts, scheds, loader, steps, cfg, tmp_path, callbacks, records.append)
    return loop, records


def test_poisoned_batch_is_skipped_and_logged(tokens, tmp_path):
    poisoned, records = run_loop(tokens, tmp_path, 30, "skip", poison_at=30)
    poisoned.run()
    spikes = [r["spike"] for r in records if "spike" in r]
    assert len(spikes) == 1 and spikes[0]["policy"] == "skip"
    losses = [r["loss"] for r in records if "loss" in r]
    assert spikes[0]["loss"] > 1.5 * losses[-2]
    # the poisoned step changed nothing
    assert same(poisoned.loader.weights_before, weights(poisoned.model))


def test_rewind_policy_reloads_the_last_checkpoint(tokens, tmp_path):
    loop, records = run_loop(tokens, tmp_path, 30, "rewind", poison_at=28, ckpt_every=25)
    loop.run()
    steps = [r["step"] for r in records if "loss" in r]
    assert steps[:28] == list(range(1, 29))
    assert steps[28:] == [26, 27, 28, 29, 30]  # rewound to step 25, then carried on


def test_resume_from_checkpoint_is_bit_exact(tokens, tmp_path):
    full, _ = run_loop(tokens, tmp_path / "full", 8, "skip")
    full.run()
    first, _ = run_loop(tokens, tmp_path / "resumed", 8, "skip", ckpt_every=4)
    first.total_steps = 5  # stop after the step-4 checkpoint, as if killed
    first.run()
    assert [s for s, _ in checkpoint.checkpoints(tmp_path / "resumed")] == [4]
    second, _ = run_loop(tokens, tmp_path / "resumed", 8, "skip")
    assert second.resume() and second.step == 4
    second.run()
    assert same(weights(full.model), weights(second.model))


def test_preemption_signal_checkpoints_and_fails_the_run(tokens, tmp_path):
    loop, _ = run_loop(tokens, tmp_path, 10, "skip")
    loop._preempted = True
    with pytest.raises(RunFailed, match="preempted at step 1"):
        loop.run()
    assert checkpoint.latest(tmp_path).name == "ckpt-00000001"


def test_train_model_reports_val_loss_per_domain(tokens, tmp_path):
    run = make_run(tmp_path / "out")
    model, metrics = train_model(tiny_model(), spec(tokens, 12, log_every=4), run)
    assert set(metrics["val_loss_per_domain"]) == {"a", "b"}
    assert metrics["final_val_loss"] < 6.0  # ln(512) = 6.24 at init
    assert metrics["steps"] == 12 and metrics["tokens"] == 12 * 4 * 32
    lines = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [4, 8, 12]
    assert lines[-1]["val_loss"] == metrics["final_val_loss"]


def test_trim_metrics_keeps_other_stages_lines(tmp_path):
    from llmforge.train.metrics import trim_metrics

    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 5, "length": 96}, {"step": 9, "length": 96}, {"step": 3, "length": 128},
            {"step": 6, "length": 128}]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trim_metrics(path, 4, {"length": 128})
    kept = [json.loads(x) for x in path.read_text().splitlines()]
    assert kept == rows[:3]
