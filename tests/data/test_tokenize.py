import pytest
from transformers import AutoTokenizer

from tailor.data.tokenize import IGNORE, encode, encode_fitting


@pytest.fixture(scope="module")
def tok(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


MESSAGES = [
    {"role": "user", "content": "hello how are you"},
    {"role": "assistant", "content": "fine thanks"},
    {"role": "user", "content": "what about the weather"},
    {"role": "assistant", "content": "sunny and warm"},
]


def test_only_response_and_end_of_turn_are_trained(tok):
    enc = encode(tok, MESSAGES)
    trained = [t for t, y in zip(enc["input_ids"], enc["labels"]) if y != IGNORE]
    assert tok.decode(trained) == "sunny and warm<|im_end|>"
    assert trained[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    prompt = tok.decode([t for t, y in zip(enc["input_ids"], enc["labels"]) if y == IGNORE])
    assert prompt.endswith("<|im_start|>assistant\n") and "fine thanks" in prompt


def test_labels_equal_ids_where_trained(tok):
    enc = encode(tok, MESSAGES)
    assert len(enc["labels"]) == len(enc["input_ids"])
    assert all(y == t for t, y in zip(enc["input_ids"], enc["labels"]) if y != IGNORE)


def test_overlong_sample_drops_oldest_history_then_gives_up(tok):
    sample = {"id": "c", "origin": "f:1", "messages": MESSAGES}
    full = len(encode(tok, MESSAGES)["input_ids"])
    short = encode_fitting(tok, sample, full - 1)
    assert short is not None and [m["content"] for m in short["messages"]] == ["what about the weather", "sunny and warm"]
    assert encode_fitting(tok, sample, 5) is None
