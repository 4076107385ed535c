"""The data formats users bring load into llmforge's rows: messages, ShareGPT, prompt and
completion, TRL's conversational and implicit-prompt preference rows, a field map for other
column names, from jsonl, parquet or a `datasets` save_to_disk folder; errors name the file,
the line and the user's own field."""

import pytest

from llmforge.errors import BadInput
from llmforge.post import chat_data
from tests.conftest import write_jsonl

USER, ANSWER = {"role": "user", "content": "What is 1 + 1?"}, "\\boxed{2}"
WANT = [USER, {"role": "assistant", "content": ANSWER}]


@pytest.mark.parametrize(
    "row",
    [
        {"messages": WANT},
        {"conversations": [{"from": "human", "value": USER["content"]},
                           {"from": "gpt", "value": ANSWER}]},
        {"prompt": [USER], "completion": [{"role": "assistant", "content": ANSWER}]},
        {"prompt": USER["content"], "completion": [{"role": "assistant", "content": ANSWER}]},
    ],
    ids=["messages", "sharegpt", "conversational", "mixed"],
)  # fmt: skip
def test_chat_formats_become_messages(tmp_path, row):
    (got,) = chat_data.load_source(write_jsonl(tmp_path / "c.jsonl", [row]))
    assert got["messages"] == WANT


def test_plain_prompt_completion_stays_plain_text(tmp_path):
    row = {"prompt": "1 + 1 =", "completion": " 2"}
    assert chat_data.load_source(write_jsonl(tmp_path / "c.jsonl", [row])) == [row]


def test_field_map_renames_columns_and_message_keys(tmp_path):
    row = {"dialog": [{"speaker": "user", "text": USER["content"]},
                      {"speaker": "assistant", "text": ANSWER, "thought": "one and one"}]}  # fmt: skip
    fields = {"messages": "dialog", "role": "speaker", "content": "text", "reasoning": "thought"}
    (got,) = chat_data.load_source(write_jsonl(tmp_path / "c.jsonl", [row]), "chat", fields)
    assert got["messages"] == [WANT[0], {**WANT[1], "reasoning": "one and one"}]
    prefs = [{"question": "q", "good": "a", "bad": "b"}]
    fields = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    (pref,) = chat_data.load_source(write_jsonl(tmp_path / "p.jsonl", prefs), "preference", fields)
    assert (pref["prompt"], pref["chosen"], pref["rejected"]) == ("q", "a", "b")


@pytest.mark.parametrize(
    "row",
    [
        {"prompt": [USER], "chosen": [{"role": "assistant", "content": "good"}],
         "rejected": [{"role": "assistant", "content": "bad"}]},
        {"chosen": [USER, {"role": "assistant", "content": "good"}],
         "rejected": [USER, {"role": "assistant", "content": "bad"}]},
        {"prompt": USER["content"], "chosen": [USER, {"role": "assistant", "content": "good"}],
         "rejected": [USER, {"role": "assistant", "content": "bad"}]},
    ],
    ids=["conversational", "implicit-prompt", "ultrafeedback-style"],
)  # fmt: skip
def test_preference_formats_become_string_pairs(tmp_path, row):
    (got,) = chat_data.load_source(write_jsonl(tmp_path / "p.jsonl", [row]), "preference")
    assert (got["prompt"], got["chosen"], got["rejected"]) == ([USER], "good", "bad")


def test_kto_rows_take_a_message_completion(tmp_path):
    row = {"prompt": "q", "completion": [{"role": "assistant", "content": "a"}], "label": True}
    (got,) = chat_data.load_source(write_jsonl(tmp_path / "k.jsonl", [row]), "preference")
    assert (got["prompt"], got["completion"], got["label"]) == ("q", "a", True)


def test_parquet_and_saved_datasets_read_like_jsonl(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [{"messages": WANT, "id": f"r{i}"} for i in range(3)]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "c.parquet"))
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dict"))
    for source in ("c.parquet", "saved", "dict"):
        got = chat_data.load_source(tmp_path / source)
        assert [r["id"] for r in got] == ["r0", "r1", "r2"] and got[0]["messages"] == WANT
    DatasetDict({"test": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "nosplit"))
    with pytest.raises(BadInput, match="no 'train' split.*test"):
        chat_data.load_source(tmp_path / "nosplit")


@pytest.mark.parametrize(
    "row, fields, message",
    [
        ({"text": "x"}, {}, "needs 'messages', 'conversations', or 'prompt' and 'completion'"),
        ({"dialog": "x"}, {"messages": "dialog"}, "'dialog' (fields.messages) must be a list"),
        ({"conversations": [{"from": "robot", "value": "x"}]}, {}, "conversations[0].from"),
        ({"d": [{"who": "x", "text": "y"}]}, {"messages": "d", "role": "who"}, "d[0].who"),
        ({"prompt": "", "completion": "y"}, {}, "'prompt' must be a non-empty string"),
    ],
)  # fmt: skip
def test_bad_rows_name_file_line_and_the_users_field(tmp_path, row, fields, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(BadInput) as err:
        chat_data.load_source(path, "chat", fields)
    assert "bad.jsonl:1: " in str(err.value) and message in str(err.value)


def test_bad_preference_rows_name_the_field(tmp_path):
    cases = [
        ({"prompt": [USER], "chosen": [{"role": "assistant", "content": "a"},
                                    {"role": "user", "content": "b"}],
          "rejected": [{"role": "assistant", "content": "c"}]}, "'chosen' must end in exactly one"),
        ({"chosen": [{"role": "user", "content": "a"}],
          "rejected": [{"role": "user", "content": "b"}]}, "share no prompt turns"),
        ({"question": "q", "good": "a"}, "'bad' (fields.rejected)"),
    ]  # fmt: skip
    fields = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    for row, message in cases:
        path = write_jsonl(tmp_path / "p.jsonl", [row])
        with pytest.raises(BadInput, match="p.jsonl:1: ") as err:
            chat_data.load_source(path, "preference", fields if "question" in row else {})
        assert message in str(err.value)


def test_an_unknown_field_name_is_a_config_error():
    from llmforge.config import load
    from llmforge.errors import ConfigError
    from stages.sft import Config

    with pytest.raises(ConfigError, match="fields.promt.*unknown field"):
        load(Config, None, ["fields={promt: question}"])
