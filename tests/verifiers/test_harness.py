"""The wire format between judge and player: exact built-in values in, the same values out."""

import json
import math

import pytest

from llmforge.verifiers.harness import Unplain, decode, encode


def roundtrip(value):
    return decode(json.loads(json.dumps(encode(value))))


@pytest.mark.parametrize(
    "value",
    [
        None, True, 0, -7, 10**40, 1.5, "é", [], (), (1, "a"), [1, [2, (3,)]],
        {"a": 1, 2: [3], (1, 2): None}, {1, 2}, frozenset({"x"}), b"\x00\xff", 1 + 2j,
    ],
)  # fmt: skip
def test_plain_values_come_back_equal_and_of_the_same_types(value):
    back = roundtrip(value)
    assert back == value and type(back) is type(value)
    if isinstance(value, (list, tuple)):
        assert [type(x) for x in back] == [type(x) for x in value]


def test_special_floats_survive():
    back = roundtrip([float("inf"), float("-inf"), float("nan")])
    assert back[:2] == [math.inf, -math.inf] and math.isnan(back[2])


class Yes:
    def __eq__(self, other):
        return True


class Int(int):
    pass


class Lies:
    __class__ = property(lambda self: int)


@pytest.mark.parametrize(
    "value",
    [Yes(), Int(3), Lies(), [Int(1)], {"k": Yes()}, (x for x in []), NotImplemented],
    ids=["eq-yes", "int-subclass", "lying-class", "list-of-subclass", "dict-of-eq-yes",
         "generator", "NotImplemented"],
)  # fmt: skip
def test_anything_not_made_of_exact_builtins_is_refused(value):
    with pytest.raises(Unplain):
        encode(value)


def test_a_self_containing_list_is_refused():
    loop = []
    loop.append(loop)
    with pytest.raises(Unplain, match="nested too deeply"):
        encode(loop)


@pytest.mark.parametrize(
    "data",
    [
        {"tuple": [1], "set": []},
        {"object": []},
        {"dict": [[1]]},
        {"set": [[1]]},
        {"bytes": 5},
        {"complex": ["1", 2]},
    ],
)
def test_decode_refuses_what_encode_could_not_have_made(data):
    with pytest.raises((ValueError, TypeError)):
        decode(data)
