"""The pipeline verdict table: each stage's number before and after, stated honestly."""

from llmforge.eval import pipeline
from llmforge.eval.report import Row


def row(stage, math_loss=None, math_acc=None, fmt=None, passkey=None):
    tasks = {}
    if math_acc is not None:
        tasks["math"] = {"all": {"avg@4": math_acc, "pass@4": min(1.0, math_acc * 2)}}
    if fmt is not None:
        tasks["format"] = {"all": {"avg@4": fmt}}
    loss = {"per_domain": {"math": {"loss": math_loss}}} if math_loss is not None else {}
    ctx = {"passkey": {"256": {"accuracy": 0.0, "logprob": passkey}}} if passkey else {}
    return Row(
        label=stage,
        stage=stage,
        path="",
        loss=loss,
        tasks=tasks,
        long_context=ctx,
        val_curve=[(0, 6.0), (100, 4.0)] if stage == "pretrain" else [],
    )


def test_verdicts_say_what_improved_and_what_did_not():
    rows = [
        row("pretrain", math_loss=2.0),
        row("midtrain", math_loss=1.5, passkey=-9.0),
        row("context-extend", passkey=-7.0, math_acc=0.0, fmt=0.1),
        row("sft", math_acc=0.30, fmt=0.9),
        row("rlvr", math_acc=0.25),
    ]
    found = {(v.stage, v.measure.split(" (")[0]): v for v in pipeline.verdicts(rows)}
    assert found[("pretrain", "validation loss")].improved is True
    assert found[("midtrain", "math-domain val loss")].improved is True
    assert found[("context-extend", "passkey log-likelihood at 256 tokens")].improved is True
    assert found[("sft", "think/no_think format compliance")].improved is True
    rl = found[("rlvr", "math accuracy, avg@n sampled")]
    assert rl.improved is False and rl.cells()[4] == "NO"
    assert rl.before == "0.3" and rl.after == "0.25"


def test_missing_stages_give_no_rows():
    assert pipeline.verdicts([row("sft", math_acc=0.1)]) == []


def test_context_extend_is_also_judged_by_loss_at_the_longest_common_window():
    mid, long = row("midtrain"), row("context-extend")
    mid.loss = {"by_length": {"128": {"loss": 2.0}, "256": {"loss": 3.5}}}
    long.loss = {"by_length": {"128": {"loss": 2.1}, "256": {"loss": 2.6}, "512": {"loss": 3.0}}}
    found = [v for v in pipeline.verdicts([mid, long]) if "windows" in v.measure]
    assert [(v.measure.split(" (")[0], v.before, v.after, v.improved) for v in found] == [
        ("val loss on 256-token windows", "3.5", "2.6", True)
    ]


def test_regmix_verdict_names_the_target_it_confirmed():
    def arts(target):
        m = {"confirm": {"natural": 5.2, "chosen": 5.1, "chosen_beats_natural": True},
             "weights": {"math": 1.0}, "target": target}  # fmt: skip
        return {"regmix": [("mix", {"metrics": m})]}

    (old,) = pipeline.regmix_verdict(arts(None))  # artifacts from before targets were named
    assert old.measure.startswith("val loss of a confirmation proxy") and old.improved
    (new,) = pipeline.regmix_verdict(arts("eval metrics"))
    assert new.measure.startswith("eval metrics of a confirmation proxy")


def test_format_compliance_after_rl_is_judged_as_kept_within_slack():
    def verdict(after):
        rows = [row("sft", math_acc=0.1, fmt=0.90), row("rlvr", math_acc=0.2, fmt=after)]
        (v,) = [v for v in pipeline.verdicts(rows) if "kept" in v.measure]
        return v.improved

    assert verdict(0.88) is True and verdict(0.95) is True and verdict(0.50) is False


def test_rl_math_verdict_notes_the_most_common_answer():
    sft, rl = row("sft", math_acc=0.01, fmt=0.9), row("rlvr", math_acc=0.03, fmt=0.9)
    sft.tasks["math"].update(top_answer="11", top_answer_share=0.04)
    rl.tasks["math"].update(top_answer="0", top_answer_share=0.29)
    (v,) = [v for v in pipeline.verdicts([sft, rl]) if v.measure.startswith("math accuracy")]
    assert v.note == "most common answer 0 in 29% of samples (sft: 11 in 4%)"


def test_rl_is_judged_against_its_input_the_dpo_model_when_there_is_one():
    rows = [row("sft", math_acc=0.01, fmt=0.9), row("dpo", math_acc=0.03, fmt=0.9),
            row("rlvr", math_acc=0.02, fmt=0.9)]  # fmt: skip
    rl = [v for v in pipeline.verdicts(rows) if v.stage == "rlvr" and "avg@n" in v.measure]
    assert [(v.measure.split("(")[1], v.improved) for v in rl] == [("dpo -> rlvr)", False)]
    dpo = [v for v in pipeline.verdicts(rows) if v.stage == "dpo" and "avg@n" in v.measure]
    assert [v.improved for v in dpo] == [True]


def test_a_change_inside_sampling_noise_is_marked():
    def rows(before, after, problems):
        a, b = row("dpo", math_acc=before), row("rlvr", math_acc=after)
        for r in (a, b):
            r.tasks["math"]["all"].update(problems=problems, samples_per_problem=4)
        return [a, b]

    def cell(*args):
        (v,) = [v for v in pipeline.verdicts(rows(*args)) if "avg@n" in v.measure]
        return v.cells()[4]

    assert cell(0.0275, 0.02875, 200) == "yes (within noise)"  # 1 sample in 800
    assert cell(0.0275, 0.30, 200) == "yes"
    assert cell(0.30, 0.0275, 200) == "NO"
    assert cell(0.0275, 0.02, 200) == "NO (within noise)"


def test_pass_at_k_verdict_reads_the_largest_k():
    r = row("rlvr")
    r.tasks["math"] = {"all": {"avg@4": 0.1, "pass@1": 0.1, "pass@4": 0.3, "pass@2": 0.2}}
    assert pipeline.task_score("math", "pass@")(r) == 0.3
    assert pipeline.task_score("math")(r) == 0.1


def test_dpo_preference_accuracy_is_judged_against_noise_of_its_pairs():
    def cell(before, after, pairs):
        manifest = {"metrics": {
            "heldout_before": {"accuracy": before, "margin": 0.1, "pairs": pairs},
            "heldout_after": {"accuracy": after, "margin": 0.9, "pairs": pairs},
        }}  # fmt: skip
        (v,) = pipeline.dpo_verdict({"dpo": [(None, manifest)]})
        assert v.note.startswith(f"{pairs} pairs")
        return v.cells()[4]

    assert cell(0.57, 0.62, 100) == "yes (within noise)"  # 2 SE of 100 pairs is ~0.14
    assert cell(0.57, 0.80, 100) == "yes"
    assert cell(0.57, 0.62, 2000) == "yes"
    assert cell(0.57, 0.52, 100) == "NO (within noise)"
