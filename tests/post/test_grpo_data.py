"""RL prompt files, the prompt stream and checkpoints of the rlvr loop."""

import json

import pytest
import torch

from llmforge.errors import BadInput
from llmforge.post import rl_checkpoint
from llmforge.post.rl_data import as_prompt, assign_modes, read_prompts
from llmforge.post.rl_loop import PromptStream


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_read_prompts_from_dir_with_defaults(tmp_path):
    write(tmp_path / "a.jsonl", [json.dumps({"prompt": "1+1?", "reference": "2"}), ""])
    write(
        tmp_path / "b.jsonl",
        [
            json.dumps(
                {"id": "c", "prompt": "def f():", "tests": "t", "verifier": "code", "chat": False}
            )
        ],
    )
    rows = read_prompts(tmp_path)
    assert [r["id"] for r in rows] == ["a-1", "c"]
    assert rows[0]["verifier"] == "math"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "malformed JSON"),
        ('{"prompt": ""}', "'prompt' must be"),
        ('{"prompt": "x", "verifier": "chess"}', "'verifier' must be one of"),
        ('{"prompt": "x", "verifier": "code"}', "needs 'tests'"),
        ("[1]", "JSON object"),
        ('{"prompt": "x", "reference": "1", "mode": "thinking"}', "'mode' must be think"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, line, message):
    path = write(tmp_path / "p.jsonl", [json.dumps({"prompt": "ok", "reference": "1"}), line])
    with pytest.raises(BadInput, match=message) as err:
        read_prompts(path)
    assert err.value.line == 2 and err.value.path == str(path)


def test_as_prompt():
    assert as_prompt({"prompt": "hi", "chat": False}) == "hi"
    assert as_prompt({"prompt": "hi"}, system="be brief") == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    messages = [{"role": "user", "content": "x"}]
    assert as_prompt({"prompt": messages}) == messages


def test_prompt_stream_reshuffles_each_epoch_and_resumes():
    rows = [{"id": i} for i in range(5)]
    stream = PromptStream(rows, seed=3)
    first = [r["id"] for r in stream.take(5)]
    second = [r["id"] for r in stream.take(5)]
    assert sorted(first) == sorted(second) == list(range(5)) and first != second
    resumed = PromptStream(rows, seed=3, position=7)
    assert [r["id"] for r in resumed.take(3)] == second[2:5]


def test_checkpoints_roundtrip_and_prune(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    for step in (1, 2, 3):
        rl_checkpoint.save(tmp_path, step, model, opt, sched, position=10 * step)
    assert [p.name for p in rl_checkpoint.checkpoints(tmp_path)] == ["ckpt-0000002", "ckpt-0000003"]
    saved = [p.detach().clone() for p in model.parameters()]
    fresh = torch.nn.Linear(3, 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    fresh_sched = torch.optim.lr_scheduler.LambdaLR(fresh_opt, lambda s: 1.0)
    state = rl_checkpoint.load_latest(tmp_path, fresh, fresh_opt, fresh_sched)
    assert state["step"] == 3 and state["position"] == 30
    assert all(torch.equal(a, b) for a, b in zip(saved, fresh.parameters(), strict=True))
    assert fresh_opt.state_dict()["state"][0]["step"] == 1


def test_half_written_checkpoint_is_ignored(tmp_path):
    (tmp_path / "ckpt-0000009.tmp").mkdir()
    (tmp_path / "ckpt-0000008").mkdir()  # no state.json: incomplete
    assert rl_checkpoint.checkpoints(tmp_path) == []


def test_trim_metrics(tmp_path):
    path = write(
        tmp_path / "metrics.jsonl",
        [json.dumps({"phase": "filter"})] + [json.dumps({"step": i}) for i in (1, 2, 3)],
    )
    rl_checkpoint.trim_metrics(path, 2)
    assert [json.loads(x) for x in path.read_text().splitlines()] == [
        {"phase": "filter"},
        {"step": 1},
        {"step": 2},
    ]


def test_assign_modes_alternates_and_keeps_a_row_s_own_mode():
    rows = [{"id": str(i)} for i in range(4)] + [{"id": "own", "mode": "think"}]
    got = [r.get("mode") for r in assign_modes(rows, ["think", "no_think"])]
    assert got == ["think", "no_think", "think", "no_think", "think"]
    assert assign_modes(rows, []) is rows
