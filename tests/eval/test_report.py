"""The comparison report: curves from metrics.jsonl, the table, PNGs, self-contained HTML."""

import base64
import json

from llmforge.eval import report


def fake_rows(tmp_path):
    model = tmp_path / "sft-model"
    model.mkdir()
    lines = [{"step": s, "loss": 6.0 - s / 10} for s in range(0, 30, 5)]
    lines += [{"step": 30, "val_loss": 3.4}, {"note": "no loss here"}]
    (model / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    base = report.Row(
        label="pretrain",
        stage="pretrain",
        path="p",
        curve=[(0, 7.0), (10, 5.0)],
        loss={
            "overall": {"loss": 5.0, "bpb": 2.0},
            "per_domain": {"math": {"bpb": 2.5}, "code": {"bpb": 1.5}},
        },
        tasks={"arithmetic": {"all": {"avg@4": 0.1, "pass@1": 0.1}}},
        long_context={
            "passkey": {
                "64": {"accuracy": 0.5, "logprob": -9.0, "rank": 1.5},
                "128": {"accuracy": 0.0, "logprob": -12.0, "rank": 2.5},
            },
            "skipped_lengths": [],
        },
    )
    sft = report.rows_from_model(model, {"stage": "sft"})
    sft_eval = report.Row(
        label="sft-model",
        stage="sft",
        path=str(model),
        tasks={"arithmetic": {"all": {"avg@4": 0.6}}},
        harness={"tiny_mc": {"acc": 0.75}},
        contaminated=2,
    )
    return [base, sft, sft_eval]


def test_curves_from_metrics_jsonl(tmp_path):
    sft = fake_rows(tmp_path)[1]
    assert sft.curve == [(float(s), 6.0 - s / 10) for s in range(0, 30, 5)]
    assert sft.val_curve == [(30.0, 3.4)] and sft.label == "sft-model"


def test_table_merges_model_and_its_eval(tmp_path):
    rows = report.merge(fake_rows(tmp_path))
    assert [r.label for r in rows] == ["pretrain", "sft-model"]
    header, cells = report.table(rows)
    assert header == [
        "model",
        "stage",
        "val loss",
        "bpb",
        "arithmetic",
        "lm-eval tiny_mc",
        "passkey acc / rank",
        "contaminated",
    ]
    assert cells[0] == [
        "pretrain",
        "pretrain",
        "5.0000",
        "2.0000",
        "0.100 (avg@4)",
        "-",
        "0.00 / 2.50 @128",
        "0",
    ]
    assert cells[1][4:] == ["0.600 (avg@4)", "0.750 (acc)", "-", "2"]
    assert rows[1].curve  # the eval row picked up the model's training curve


def test_build_writes_pngs_and_self_contained_html(tmp_path):
    built = report.build(fake_rows(tmp_path), tmp_path / "report", title="pipeline")
    assert built["plots"] == ["context", "loss_curves", "scores"]
    page = (tmp_path / "report" / "report.html").read_text()
    for name in built["plots"]:
        png = (tmp_path / "report" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and base64.b64encode(png).decode() in page
    assert "<td>0.600 (avg@4)</td>" in page and 'src="http' not in page
    assert "| sft-model | sft |" in (tmp_path / "report" / "summary.md").read_text()


def test_rl_curves_plot_reward_accuracy_and_length_per_trained_step(tmp_path):
    model = tmp_path / "rl"
    model.mkdir()
    lines = [{"phase": "difficulty_filter", "prompts": 8}, {"step": 1, "skipped": True}]
    lines += [{"step": s, "loss": 0.1, "reward_mean": 0.1 * s, "reward/correct": 0.05 * s,
               "completion_len": 40 - s} for s in (2, 3, 4)]  # fmt: skip
    (model / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    row = report.rows_from_model(model, {"stage": "rlvr"})
    assert [m["step"] for m in row.rl_steps] == [2, 3, 4]  # trained steps only
    assert row.rl_steps[-1] == {"step": 4, "reward_mean": 0.4, "reward/correct": 0.2,
                                "completion_len": 36}  # fmt: skip
    built = report.build([row], tmp_path / "report")
    assert "rl_curves" in built["plots"]
    assert (tmp_path / "report" / "rl_curves.png").stat().st_size > 10_000
    assert report.read_rl_steps(tmp_path / "missing.jsonl") == []


def test_trailing_mean_averages_each_point_with_the_window_before_it():
    assert report.trailing_mean([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert report.trailing_mean([2.0, 4.0], 10) == [2.0, 3.0]  # shorter than the window


def test_nothing_to_plot_gives_table_only(tmp_path):
    built = report.build([report.Row(label="empty")], tmp_path / "r")
    assert built["plots"] == [] and (tmp_path / "r" / "report.html").is_file()
