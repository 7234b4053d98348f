"""GGUF exports run in real llama.cpp: they load, render and split chat prompts like the Hugging Face
tokenizer, decode greedily like transformers, and stop at the end of the assistant's turn.

Tiny random models of each supported family (llama, qwen2, gpt2), written as f32, f16 and q8_0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gguf_models import FAMILY_SPLITS, SPLIT_TEXT, make_model, make_tokenizer
from tailor.errors import TailorError
from tailor.export.gguf_file import write_gguf
from llamacpp_fixture import llama_cpp  # noqa: F401  (fixture)

CHATS = [
    [{"role": "user", "content": "Hi! How are you doing today? I have 1234 cats."}],
    [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hello how are you?"},
     {"role": "assistant", "content": "I'm fine, thanks. And you?"}, {"role": "user", "content": "It's 3 o'clock."}],
]
TOKENS = 32
# Largest |logit difference| llama.cpp may show against float32 PyTorch on these tiny models (logits span about
# +-20): even an f32 file differs by more than summation order, as llama.cpp keeps its KV cache in f16 (measured
# up to 0.08); f16 weights add their rounding (measured up to 0.28). A wrong tensor layout is off by whole units.
LOGIT_ATOL = {"f32": 0.15, "f16": 0.5}


@pytest.fixture(scope="module")
def families():
    """family -> (model, tokenizer), built once."""
    out = {}
    for family, split in FAMILY_SPLITS.items():
        tokenizer = make_tokenizer(split)
        out[family] = (make_model(family, tokenizer), tokenizer)
    return out


def prompt_ids(tokenizer, chat) -> tuple[str, list[int]]:
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return text, tokenizer(text, add_special_tokens=False)["input_ids"]


def hf_greedy(model, ids: list[int], n: int, eos: int | None = None) -> tuple[list[int], list[float]]:
    """transformers' greedy ids and, per step, the top1-top2 logit margin."""
    x = torch.tensor([ids])
    with torch.no_grad():
        r = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False, eos_token_id=eos,
                           pad_token_id=model.config.pad_token_id, output_logits=True, return_dict_in_generate=True)
    new = r.sequences[0, len(ids):].tolist()
    margins = [float(v[0] - v[1]) for v in (torch.topk(lg[0], 2).values for lg in r.logits[: len(new)])]
    return new, margins


def hf_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def teacher_forced_logits(llama, prompt: list[int], continuation: list[int]) -> np.ndarray:
    """llama.cpp's next-token logits after the prompt and after each token of `continuation`."""
    llama.reset()
    llama.decode(prompt)
    rows = [llama.last_logits().copy()]
    for token in continuation[:-1]:
        llama.decode([token])
        rows.append(llama.last_logits().copy())
    return np.stack(rows)


def open_gguf(llama_cpp, path):
    return llama_cpp.Llama(str(path), n_ctx=512, n_threads=2)


@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0"])
@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_gguf_runs_in_llama_cpp_like_transformers(llama_cpp, families, family, dtype, tmp_path):
    model, tokenizer = families[family]
    path = write_gguf(model, tokenizer, tmp_path / f"{family}.gguf", dtype)
    llama = open_gguf(llama_cpp, path)
    try:
        eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert llama.meta("general.architecture") == family
        assert llama.meta("tokenizer.ggml.pre") == FAMILY_SPLITS[family]
        assert int(llama.meta("tokenizer.ggml.eot_token_id")) == eot
        assert int(llama.meta("tokenizer.ggml.eos_token_id")) == eot and llama.is_eog(eot)
        assert llama.chat_template() == tokenizer.chat_template
        # llama.cpp's own split of a stress text equals the HF tokenizer's (the pre-tokenizer name is right)
        assert llama.tokenize(SPLIT_TEXT, add_special=False, parse_special=False) == tokenizer(SPLIT_TEXT)["input_ids"]
        for chat in CHATS:
            text, ids = prompt_ids(tokenizer, chat)
            assert llama.apply_template(chat) == text  # llama.cpp renders the embedded template the same way
            assert llama.tokenize(text, add_special=True, parse_special=True) == ids
            if dtype == "q8_0":
                continue  # rounded to 8 bits: loading, rendering and splitting are what must agree
            hf_ids, hf_margins = hf_greedy(model, ids, TOKENS)
            # the same context step by step: every logit close, so each greedy pick is the same unless HF's top
            # two are closer than the rounding
            forced = teacher_forced_logits(llama, ids, hf_ids)
            reference = hf_logits(model, ids + hf_ids[:-1])[len(ids) - 1:]
            diff = np.abs(forced - reference).max(axis=1)
            assert diff.max() < LOGIT_ATOL[dtype]
            # a near-tie: HF's top two closer than twice what llama.cpp's logits differ by at that step
            ties = [i for i, m in enumerate(hf_margins) if m < 2 * diff[i]]
            assert len(ties) <= TOKENS // 4, f"too many near-ties to compare ({ties}); make the tiny weights livelier"
            picks = forced.argmax(axis=1)
            assert all(picks[i] == hf_ids[i] for i in range(TOKENS) if i not in ties)
            # free-running greedy: the same ids up to the first near-tie (all 32 where there is none)
            free, _, stopped, _ = llama.greedy(ids, TOKENS, stop_on_eog=False)
            same = next((i for i, (a, b) in enumerate(zip(free, hf_ids)) if a != b), TOKENS)
            print(f"{family} {dtype}: greedy ids equal for {same}/{TOKENS} tokens; near-ties at {ties}")
            assert same == TOKENS or same >= (ties[0] if ties else TOKENS), (same, ties)
            assert len(set(hf_ids)) > 3  # a reply worth comparing, not one repeated token
    finally:
        llama.close()


def stopping_model(family: str, tokenizer):
    """A lively model changed so that greedy decoding ends its reply with <|im_end|> after a few tokens:
    the end-of-turn row of its (untied) output layer is 1.25 times the row of the token it would pick at
    step 4, so the end-of-turn token wins there (or earlier)."""
    model = make_model(family, tokenizer, seed=1, tied=False)
    _, ids = prompt_ids(tokenizer, CHATS[0])
    reply, _ = hf_greedy(model, ids, 5)
    logits = hf_logits(model, ids + reply[:4])[-1]
    assert logits[reply[4]] > 1.0
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[eot] = 1.25 * head[reply[4]]
    return model


@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0"])
@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_llama_cpp_stops_at_the_end_of_the_turn(llama_cpp, families, family, dtype, tmp_path):
    tokenizer = families[family][1]
    model = stopping_model(family, tokenizer)
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    _, ids = prompt_ids(tokenizer, CHATS[0])
    hf_ids, _ = hf_greedy(model, ids, TOKENS, eos=eot)
    assert hf_ids[-1] == eot and len(hf_ids) <= 5  # transformers ends the reply there
    path = write_gguf(model, tokenizer, tmp_path / f"{family}-stop.gguf", dtype)
    llama = open_gguf(llama_cpp, path)
    try:
        assert llama.meta("general.architecture") == family
        # from the reply's last step on (q8_0 rounding may flip an earlier near-tie and wander elsewhere)
        free, _, stopped, _ = llama.greedy(ids + hf_ids[:-1], TOKENS, stop_on_eog=True)
        assert stopped and free == [eot]
        if dtype != "q8_0":  # the whole reply, free-running
            free, _, stopped, _ = llama.greedy(ids, TOKENS, stop_on_eog=True)
            assert stopped and free == hf_ids
    finally:
        llama.close()


@pytest.mark.parametrize("split", ["gpt-2", "smollm", "qwen2", "llama-bpe"])
def test_each_pre_tokenizer_splits_like_the_hf_tokenizer(llama_cpp, split, tmp_path):
    """The pre-tokenizer name is read off the tokenizer's own split; llama.cpp, given that name, splits a
    stress text into exactly the HF tokenizer's ids (a wrong name would differ on digits, case, newlines)."""
    tokenizer = make_tokenizer(split)
    model = make_model("llama", tokenizer, hidden=32)
    path = write_gguf(model, tokenizer, tmp_path / "t.gguf", "f32")
    llama = open_gguf(llama_cpp, path)
    try:
        assert llama.meta("tokenizer.ggml.pre") == split
        for text in (SPLIT_TEXT, "x 12345 don'T\n\n  stop\r\n\tIt's OK!! 3.14"):
            assert llama.tokenize(text, add_special=False, parse_special=False) == tokenizer(text)["input_ids"]
    finally:
        llama.close()


def test_unknown_pre_tokenizer_is_refused(tmp_path):
    from tokenizers import Regex, pre_tokenizers

    tokenizer = make_tokenizer("gpt-2")
    backend = tokenizer.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\w+|\s"), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    model = make_model("llama", tokenizer, hidden=32)
    with pytest.raises(TailorError, match="no built-in pre-tokenizer"):
        write_gguf(model, tokenizer, tmp_path / "t.gguf", "f32")
    assert not list(tmp_path.iterdir())
