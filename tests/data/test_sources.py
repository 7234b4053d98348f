import json

import pytest

from tailor.data.dialogue import split_of, windows
from tailor.data.sources import read_chitchat, read_conversations, read_jsonl
from tailor.errors import TailorError


def write(tmp_path, lines):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_json_names_file_and_line(tmp_path):
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    path = write(tmp_path, [good, good, "{not json"])
    with pytest.raises(TailorError, match=r"d.jsonl, line 3: not valid JSON"):
        read_jsonl(path)


def test_missing_field_and_bad_role_are_named(tmp_path):
    with pytest.raises(TailorError, match=r"line 1: missing field 'messages'"):
        read_jsonl(write(tmp_path, [json.dumps({"text": "hi"})]))
    bad_role = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]})
    with pytest.raises(TailorError, match=r"line 1: messages\[1\].role is 'bot'"):
        read_jsonl(write(tmp_path, [bad_role]))
    bad_content = json.dumps({"messages": [{"role": "user", "content": 3}]})
    with pytest.raises(TailorError, match=r"messages\[0\].content must be a string"):
        read_jsonl(write(tmp_path, [bad_content]))


def test_empty_dataset_is_an_error(tmp_path):
    with pytest.raises(TailorError, match="holds no conversations"):
        read_conversations(str(write(tmp_path, [""])))


def test_chitchat_package_is_read_whole():
    conversations = read_chitchat()
    assert len(conversations) == 7168
    roles = [m["role"] for m in conversations[0]["messages"][:4]]
    assert roles == ["user", "assistant", "user", "assistant"]


def test_windows_keep_last_k_turns_and_open_with_user():
    msgs = [{"role": "system", "content": "s"}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": str(i)} for i in range(8)
    ]
    samples = windows({"id": "c", "origin": "o", "messages": msgs}, history_turns=2)
    assert [[m["content"] for m in s["messages"]] for s in samples] == [
        ["s", "0", "1"], ["s", "2", "3"], ["s", "4", "5"], ["s", "6", "7"]
    ]
    samples = windows({"id": "c", "origin": "o", "messages": msgs}, history_turns=3, system_prompt="new")
    assert [m["content"] for m in samples[-1]["messages"]] == ["new", "4", "5", "6", "7"]


def test_split_by_conversation_is_deterministic_and_disjoint():
    ids = [f"conv-{i}" for i in range(2000)]
    first = {i: split_of(i, 0.1, 0.1) for i in ids}
    assert first == {i: split_of(i, 0.1, 0.1) for i in reversed(ids)}
    share = sum(v == "test" for v in first.values()) / len(ids)
    assert 0.07 < share < 0.13
