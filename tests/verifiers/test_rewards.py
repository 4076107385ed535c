"""Rewards and verifiers: answer extraction, math/exact/numeric, code, format, language, overlong."""

import pytest

from llmforge.errors import BadInput
from llmforge.verifiers import build, combine, extract_answer, last_boxed, overlong_penalty

MATH = {"reference": "1/2", "verifier": "math"}


def test_last_boxed_handles_nesting_and_cut_off():
    assert last_boxed(r"a \boxed{1} then \boxed{\frac{1}{2}} end") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{\frac{1}{2}") is None
    assert last_boxed("no box") is None


def test_extract_answer_takes_only_the_asked_form():
    assert extract_answer(r"<think>maybe \boxed{3}</think>so \boxed{4}") == "4"
    assert extract_answer("<think>7 or 8</think>The answer is 1,234.") is None
    assert extract_answer(r"<think>\boxed{7}</think>no idea") is None
    assert extract_answer(r"\boxed{}") is None
    assert extract_answer(" 42\nQ: next question", form="plain") == "42"
    assert extract_answer("<think>x</think>\n\n", form="plain") is None


@pytest.mark.parametrize(
    ("completion", "sample", "value", "parseable"),
    [
        # a number somewhere in the text is not an answer to a task that asks for \boxed{}
        ("The answer is 1/2.", MATH, 0.0, False),
        ("so 0.5 it is", {"reference": "0.5", "verifier": "numeric", "chat": True}, 0.0, False),
        # a think-mode answer comes after the reasoning, which must end
        (r"<think>so \boxed{1/2}", {**MATH, "mode": "think"}, 0.0, False),
        (r"<think>so</think> \boxed{1/2}", {**MATH, "mode": "think"}, 1.0, True),
        (r"\boxed{1/2}", {**MATH, "mode": "no_think"}, 1.0, True),
        # a plain completion of a numeric/exact task is the answer itself, on its first line
        (
            " 1,234\nQ: what is 2+2?",
            {"reference": "1234", "verifier": "numeric", "chat": False},
            1.0,
            True,
        ),
        (
            "The answer is 1234",
            {"reference": "1234", "verifier": "numeric", "chat": False},
            0.0,
            False,
        ),
        ("Paris\n", {"reference": "Paris", "verifier": "exact", "chat": False}, 1.0, True),
        (
            r"so \boxed{1234}",
            {"reference": "1234", "verifier": "numeric", "chat": False},
            1.0,
            True,
        ),
        # math asks for the box even on a plain completion (the eval's gold form)
        ("1/2", {**MATH, "chat": False}, 0.0, False),
    ],
)
def test_parseable_means_an_answer_in_the_asked_form(completion, sample, value, parseable):
    score = build("correct")(completion, sample)
    assert (score.value, score.parseable) == (value, parseable)


def test_form_option_overrides_the_task_form():
    plain_row = {"reference": "5", "verifier": "numeric", "chat": False}
    assert build("numeric", form="boxed")(r"x \boxed{5}", plain_row).value == 1.0
    assert not build("numeric", form="boxed")("5", plain_row).parseable
    assert build("exact", form="plain")("5", {"reference": "5"}).value == 1.0
    with pytest.raises(BadInput, match="form must be one of"):
        build("math", form="anywhere")
    with pytest.raises(BadInput, match="bad options"):
        build("math", fallback_number=True)


CODE_SAMPLE = {
    "prompt": 'def add(a, b):\n    """Add two numbers."""\n',
    "tests": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
    "verifier": "code",
}


def test_code_verifier_continuation_fenced_and_wrong():
    reward = build("code", timeout_s=5)
    good = reward.batch(
        [
            "    return a + b\n",
            "```python\ndef add(a, b):\n    return b + a\n```",
            "    return a - b\n",
            "    return (\n",
            "    while True: pass\n",
        ],
        [CODE_SAMPLE] * 5,
    )
    assert [s.value for s in good] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert [s.parseable for s in good] == [True, True, True, False, True]


def test_format_reward():
    fmt = build("format")
    assert fmt(r"<think>x</think>\boxed{1}", {}).value == 1.0
    assert fmt(r"x</think>\boxed{1}", {}).value == 1.0  # opening tag came from the template
    assert fmt(r"<think>x</think>1", {}).value == 0.5
    assert fmt(r"</think><think>\boxed{1}", {}).value == 0.5
    assert fmt(r"\boxed{1}", {}).value == 0.5
    assert build("format", require_think=False)(r"\boxed{1}", {}).value == 1.0
    # no_think: the template already closed the empty think block; any tag is wrong.
    assert fmt(r"\boxed{1}", {"mode": "no_think"}).value == 1.0
    assert fmt(r"<think>x</think>\boxed{1}", {"mode": "no_think"}).value == 0.5
    assert fmt(r"\boxed{1}", {"mode": "think"}).value == 0.5
    assert build("format", require_think=False)(r"\boxed{1}", {"mode": "think"}).value == 0.5


def test_language_consistency():
    lang = build("language")
    assert lang("plain English text", {}).value == 1.0
    assert lang("abcd" + "абвг", {}).value == pytest.approx(0.5)
    assert lang("абвг", {"script": "cyrillic"}).value == 1.0
    assert lang("123 !!", {}).value == 1.0


def test_overlong_penalty_shape():
    assert overlong_penalty(80, 80, 100) == 0.0
    assert overlong_penalty(90, 80, 100) == pytest.approx(-0.5)
    assert overlong_penalty(100, 80, 100) == -1.0
    assert overlong_penalty(500, 80, 100) == -1.0
    assert build("overlong", soft_len=2, max_len=4)("a b c", {}, length=None).value == -0.5
    with pytest.raises(BadInput):
        build("overlong", soft_len=5, max_len=5)


def test_weighted_combination_and_parseable():
    reward = combine(
        {"correct": 1.0, "format": 0.5, "overlong": 1.0},
        {"overlong": {"soft_len": 10, "max_len": 20}},
    )
    scores = reward.batch(
        [r"<think>t</think>\boxed{0.5}", "nothing here", r"<think>t</think>\boxed{9}"],
        [MATH, MATH, {"reference": "9", "verifier": "exact"}],
        [5, 15, 30],
    )
    assert [s.value for s in scores] == pytest.approx([1.5, 0.0 + 0.0 - 0.5, 1.0 + 0.5 - 1.0])
    assert [s.parseable for s in scores] == [True, False, True]
    assert scores[0].parts == {"correct": 1.0, "format": 1.0, "overlong": 0.0}


def test_unknown_reward_and_verifier_are_bad_input():
    with pytest.raises(BadInput, match="known rewards"):
        build("nope")
    with pytest.raises(BadInput, match="unknown verifier"):
        build("correct")("x", {"verifier": "chess"})
    with pytest.raises(BadInput):
        combine({"format": 1.0}, {"math": {}})
