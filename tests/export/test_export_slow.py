"""The real SmolLM2-135M-Instruct exported to GGUF, read back by transformers: same tokens, same greedy replies."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gguf_models import SPLIT_TEXT
from tailor.export.gguf_file import write_gguf
from tailor.models.load import resolve
from llamacpp_fixture import llama_cpp  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

QUESTIONS = ["Hi! How was your weekend?", "What is your favourite food? I like 3 kinds of pasta."]


@pytest.fixture(scope="module")
def smollm2():
    folder = resolve("smollm2-135m-instruct")
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(folder)


def test_real_model_gguf_round_trip(smollm2, tmp_path):
    model, tokenizer = smollm2
    out = write_gguf(model, tokenizer, tmp_path / "smollm2.gguf", "f16")
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32)
    back_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    assert back_tokenizer.chat_template == tokenizer.chat_template
    for question in QUESTIONS:
        messages = [{"role": "user", "content": question}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert back_tokenizer(back_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                              add_special_tokens=False)["input_ids"] == ids
        x = torch.tensor([ids])
        with torch.no_grad():
            a = model.generate(x, max_new_tokens=16, do_sample=False)[0, len(ids):].tolist()
            b = back.generate(x, max_new_tokens=16, do_sample=False)[0, len(ids):].tolist()
        assert a == b, (tokenizer.decode(a), back_tokenizer.decode(b))



@pytest.mark.parametrize("dtype", ["f16", "q8_0"])
def test_real_model_gguf_in_llama_cpp(llama_cpp, smollm2, tmp_path, dtype):
    """SmolLM2-135M-Instruct's GGUF in real llama.cpp: its template and tokens are HF's, f16 decodes greedily
    like transformers (up to near-ties), and both f16 and q8_0 end a short answer with <|im_end|>."""
    model, tokenizer = smollm2
    out = write_gguf(model, tokenizer, tmp_path / "smollm2.gguf", dtype)
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    llama = llama_cpp.Llama(str(out), n_ctx=1024, n_threads=2)
    try:
        # the pre-tokenizer name follows the tokenizer as tailor loads it (this one, rebuilt by transformers from the
        # packaged GGUF, splits digits GPT-2's way): llama.cpp splits a stress text exactly as it does
        assert llama.tokenize(SPLIT_TEXT, add_special=False, parse_special=False) == tokenizer(SPLIT_TEXT)["input_ids"]
        assert int(llama.meta("tokenizer.ggml.eos_token_id")) == eot == int(llama.meta("tokenizer.ggml.eot_token_id"))
        assert llama.chat_template() == tokenizer.chat_template
        for question in [*QUESTIONS, "Answer with just a number: what is 2 + 3?"]:
            messages = [{"role": "user", "content": question}]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert llama.tokenize(text, add_special=True, parse_special=True) == ids
            x = torch.tensor([ids])
            with torch.no_grad():
                r = model.generate(x, max_new_tokens=32, do_sample=False, eos_token_id=eot, output_logits=True,
                                   return_dict_in_generate=True)
            hf = r.sequences[0, len(ids):].tolist()
            margins = [float(v[0] - v[1]) for v in (torch.topk(lg[0], 2).values for lg in r.logits)]
            got, _, stopped, _ = llama.greedy(ids, 32, stop_on_eog=True)
            same = next((i for i, (a, b) in enumerate(zip(got, hf)) if a != b), min(len(got), len(hf)))
            print(f"smollm2 {dtype} {question!r}: {same}/{len(hf)} greedy ids equal; HF margin there "
                  f"{margins[same] if same < len(hf) else None}")
            if dtype == "f16":
                # llama.cpp's f16 logits differ from float32 PyTorch by about 0.02: only a near-tie may flip
                assert got == hf or margins[same] < 0.1, (tokenizer.decode(got), tokenizer.decode(hf))
            if hf[-1] == eot:  # transformers ended its answer: llama.cpp ends the same answer there too
                _, _, stopped_too, _ = llama.greedy(ids + hf[:-1], 4, stop_on_eog=True)
                assert stopped_too
        assert stopped and got[-1] == eot  # the short answer ends at the end of the turn, free-running
    finally:
        llama.close()
