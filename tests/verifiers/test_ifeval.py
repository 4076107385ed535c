"""IFEval-style constraint verifiers: a passing and a failing response for every constraint
type, the JSON-schema subset, language detection, malformed constraints and the reward."""

import pytest

from llmforge.errors import BadInput
from llmforge.verifiers import build
from llmforge.verifiers.ifeval import CHECKS, constraint_error, follows, schema_errors
from llmforge.verifiers.language_id import is_language

SCHEMA = {
    "type": "object",
    "required": ["title", "tags"],
    "properties": {
        "title": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}

# (constraint, a response that follows it, one that does not)
CASES = [
    ({"type": "words", "max": 5}, "one two three four five", "one two three four five six"),
    ({"type": "words", "min": 3}, "it's a well-known fact", "too short"),
    ({"type": "sentences", "max": 2}, "One. Two!", "One. Two? Three."),
    ({"type": "sentences", "min": 2}, "First one. Second one.", "Only one sentence here."),
    ({"type": "paragraphs", "count": 2}, "para one\n\npara two", "one\n\ntwo\n\nthree"),
    ({"type": "paragraphs", "count": 2, "divider": "***"}, "a\n***\nb", "a\n\nb"),
    ({"type": "first_word", "paragraph": 2, "word": "then"}, "x\n\nThen y", "x\n\nand then"),
    ({"type": "bullets", "count": 2}, "* one\n- two", "* one\n* two\n* three"),
    ({"type": "json"}, '```json\n{"a": 1}\n```', "{'a': 1}"),
    (
        {"type": "json", "schema": SCHEMA},
        '{"title": "t", "tags": ["x"]}',
        '{"title": "t", "tags": [1]}',
    ),
    ({"type": "highlights", "min": 2}, "*one* and *two*", "*one* and **bold**"),
    ({"type": "sections", "min": 2}, "SECTION 1\na\nSECTION 2\nb", "SECTION 1\nall of it"),
    ({"type": "title"}, "<<My Title>>\ntext", "<My Title>\ntext"),
    ({"type": "choice", "options": ["yes.", "no."]}, "I say yes.", "yes. no."),
    ({"type": "lowercase"}, "all lower case, 42", "Not all lower"),
    ({"type": "uppercase"}, "ALL CAPS HERE!", "ALL CAPS but one"),
    ({"type": "capital_words", "max": 1}, "ONE shout only", "TWO SHOUTS here"),
    (
        {"type": "keywords", "words": ["river", "Stone"]},
        "A stone in the River.",
        "A riverbed of stones.",
    ),
    ({"type": "forbidden", "words": ["very"]}, "everything is fine", "it is Very fine"),
    ({"type": "keyword_frequency", "word": "sun", "min": 2}, "sun, sun!", "sunny sun"),
    ({"type": "letter_frequency", "letter": "z", "max": 1}, "a zebra", "zigzag"),
    (
        {"type": "language", "lang": "fr"},
        "Le chat est sur la table et il dort.",
        "The cat sleeps on the table.",
    ),
    ({"type": "language", "lang": "ru"}, "Кошка спит на столе.", "Koshka spit na stole."),
    ({"type": "starts_with", "phrase": "Dear Sir"}, "dear sir, hello", "Hello, dear sir"),
    (
        {"type": "ends_with", "phrase": "Any questions?"},
        "Done. Any questions?  ",
        "Any questions? Bye.",
    ),
    ({"type": "quoted"}, '"all of it"', '"half" of it'),
    ({"type": "placeholders", "min": 2}, "Meet at [place] on [date].", "Meet at [place] soon."),
    ({"type": "postscript"}, "Body.\n\nP.S. more", "Body. PS more"),
    ({"type": "postscript", "marker": "P.P.S"}, "Body.\nP.P.S extra", "Body.\nP.S. extra"),
    ({"type": "no_comma"}, "no commas here", "one, two"),
    ({"type": "repeat_prompt", "text": "Write a poem."}, "Write a poem. Roses...", "A poem: roses"),
    ({"type": "two_responses"}, "first take\n******\nsecond take", "same\n******\nsame"),
]


def test_every_constraint_type_has_a_case():
    assert {c["type"] for c, _, _ in CASES} == set(CHECKS)


@pytest.mark.parametrize(("constraint", "good", "bad"), CASES, ids=[c["type"] for c, _, _ in CASES])
def test_constraint_passes_and_fails(constraint, good, bad):
    assert constraint_error(constraint) is None
    assert follows(good, constraint)
    assert not follows(bad, constraint)


def test_schema_errors_name_the_place():
    assert schema_errors({"title": 3}, SCHEMA) == ["$: missing 'tags'", "$.title: expected string"]
    closed = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"a": {"enum": [1, 2]}},
    }
    assert schema_errors({"a": 3, "b": 0}, closed) == [
        "$.a: not one of [1, 2]",
        "$: unexpected 'b'",
    ]
    assert schema_errors([1, 2, 3], {"type": "array", "maxItems": 2}) == ["$: 3 items"]
    assert schema_errors(True, {"type": "integer"}) == ["$: expected integer"]


def test_language_rule_separates_latin_languages_by_function_words():
    assert is_language("Der Hund ist nicht im Haus und schläft.", "de")
    assert not is_language("Der Hund ist nicht im Haus und schläft.", "en")
    assert is_language("Yes.", "en") and is_language("Oui.", "fr")  # no function words: script only
    assert is_language("我喜欢喝茶。", "zh") and not is_language("我喜欢喝茶。", "en")
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        is_language("text", "xx")


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        ({"type": "shout"}, "unknown constraint type 'shout'"),
        ({"type": "words"}, "needs 'min' or 'max'"),
        ({"type": "words", "max": "5"}, "option 'max' has the wrong type"),
        ({"type": "bullets"}, "needs option 'count'"),
        ({"type": "title", "size": 3}, "has no option 'size'"),
        ({"type": "language", "lang": "xx"}, "unknown lang 'xx'"),
        ("words", "must be an object"),
    ],
)
def test_malformed_constraints_are_named(constraint, message):
    assert message in constraint_error(constraint)


def test_reward_scores_share_or_all_and_ignores_reasoning():
    sample = {"id": "t", "constraints": [{"type": "no_comma"}, {"type": "words", "max": 3}]}
    half = build("ifeval")("<think>a, b, c, d, e</think>one two, three", sample)
    assert (half.value, half.parseable) == (0.5, True)
    assert half.parts == {"0:no_comma": 0.0, "1:words": 1.0}
    assert build("ifeval", partial=False)("one, two", sample).value == 0.0
    assert build("ifeval", partial=False)("one two", sample).value == 1.0
    assert build("correct")("one two", {**sample, "verifier": "ifeval"}).value == 1.0
    with pytest.raises(BadInput, match="task t: constraints\\[0\\]: unknown constraint type"):
        build("ifeval")("x", {"id": "t", "constraints": [{"type": "nope"}]})
