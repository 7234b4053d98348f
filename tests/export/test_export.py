"""tailor export: merged Hugging Face folders and GGUF files, read back and compared with the original."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tailor.cli import main
from tailor.errors import TailorError
from tailor.export.gguf_file import write_gguf
from tailor.export.standalone import export_merged
from tailor.runs import load as open_run

MESSAGES = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hello how are you? 1234 cats"}]


def lively_copy(source: Path, target: Path, seed: int = 2) -> Path:
    model = AutoModelForCausalLM.from_pretrained(source)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def trained_run(tiny_model, tmp_path_factory) -> Path:
    """`tailor train` on the tiny model, then its model/ made livelier (same folder layout and files)."""
    import yaml

    from tiny import ASSETS

    root = tmp_path_factory.mktemp("export-run")
    cfg = {"name": "tiny", "output_dir": str(root / "runs"), "model": {"name": str(tiny_model), "max_length": 128},
           "data": {"source": str(ASSETS / "dialogue.jsonl"), "val_fraction": 0.2, "test_fraction": 0.2,
                    "max_val_samples": 0, "max_test_samples": 0},
           "train": {"learning_rate": 1e-3, "batch_size": 4, "max_steps": 2, "eval_every": 2, "save_every": 0,
                     "log_every": 1, "precision": "fp32", "warmup_steps": 1},
           "eval": {"batch_size": 4, "generate_samples": 2, "show_samples": 0},
           "decode": {"max_new_tokens": 4, "batch_size": 4}}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(root / "config.yaml")]) == 0
    run = root / "runs" / "tiny"
    model_dir = run / "model"
    assert (model_dir / "tailor.yaml").is_file()
    lively = lively_copy(model_dir, root / "lively")
    for f in lively.iterdir():  # keep tailor.yaml and the run's other files; swap the weights
        (model_dir / f.name).write_bytes(f.read_bytes())
    return run


def greedy(model, tokenizer, n=16):
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits
        out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return ids[0].tolist(), logits, out[0, ids.shape[1]:].tolist()


def test_gguf_round_trip_f32_is_exact(trained_run, tmp_path):
    out = tmp_path / "gguf" / "tiny.gguf"
    assert main(["export", str(trained_run), "--gguf", str(out), "--gguf-dtype", "f32"]) == 0
    original = AutoModelForCausalLM.from_pretrained(trained_run / "model")
    tokenizer = AutoTokenizer.from_pretrained(trained_run / "model")
    back = AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name, dtype=torch.float32)
    back_tokenizer = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    assert back_tokenizer.chat_template == tokenizer.chat_template
    ids_a, logits_a, reply_a = greedy(original, tokenizer)
    ids_b, logits_b, reply_b = greedy(back, back_tokenizer)
    assert ids_a == ids_b  # the embedded tokenizer and template render and split the prompt the same way
    assert torch.allclose(logits_a, logits_b, atol=1e-5)
    assert reply_a == reply_b and len(set(reply_a)) > 1
    assert back_tokenizer.decode(reply_b) == tokenizer.decode(reply_a)
    assert back_tokenizer.eos_token == tokenizer.eos_token and back_tokenizer.bos_token == tokenizer.bos_token


@pytest.mark.parametrize("dtype, atol", [("f16", 5e-2), ("q8_0", 0.5)])
def test_gguf_smaller_weights_stay_close(trained_run, tmp_path, dtype, atol):
    loaded = open_run(trained_run)
    out = write_gguf(loaded.model, loaded.tokenizer, tmp_path / f"tiny-{dtype}.gguf", dtype)
    back = AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name, dtype=torch.float32)
    _, logits_a, _ = greedy(loaded.model, loaded.tokenizer)
    _, logits_b, _ = greedy(back, loaded.tokenizer)
    assert (logits_a - logits_b).abs().max() < atol
    assert (logits_a - logits_b).abs().max() > 0  # really stored smaller
    f32 = write_gguf(loaded.model, loaded.tokenizer, tmp_path / "tiny-f32.gguf", "f32")
    assert out.stat().st_size < f32.stat().st_size


def test_merged_export_of_a_full_run_is_a_standalone_folder(trained_run, tmp_path):
    out = tmp_path / "merged"
    assert main(["export", str(trained_run), "--merged", str(out)]) == 0
    files = {p.name for p in out.iterdir()}
    assert "config.json" in files and "tailor.yaml" in files and any(f.endswith(".safetensors") for f in files)
    assert not any(f.endswith((".bin", ".pt")) for f in files)
    a = AutoModelForCausalLM.from_pretrained(trained_run / "model")
    b = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert greedy(a, tokenizer)[2] == greedy(b, tokenizer)[2]
    assert main(["export", str(trained_run), "--merged", str(out)]) == 2  # no silent overwrite
    assert main(["export", str(trained_run), "--merged", str(out), "--overwrite"]) == 0


def make_adapter_run(base: Path, root: Path) -> tuple[Path, torch.Tensor]:
    """runs/<name>/model/ holding only a LoRA adapter on `base`; returns it and the adapted logits."""
    from peft import LoraConfig, get_peft_model

    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False,
                        task_type="CAUSAL_LM")
    torch.manual_seed(5)
    peft_model = get_peft_model(model, config)
    run = root / "runs" / "lora"
    peft_model.save_pretrained(run / "model")  # adapter_config.json + adapter_model.safetensors
    AutoTokenizer.from_pretrained(base).save_pretrained(run / "model")
    tokenizer = AutoTokenizer.from_pretrained(base)
    _, logits, _ = greedy(peft_model.eval(), tokenizer)
    return run, logits


def test_merged_export_merges_an_adapter_only_run(trained_run, tmp_path):
    base = trained_run / "model"
    run, adapted = make_adapter_run(base, tmp_path)
    assert json.loads((run / "model" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    out = tmp_path / "merged"
    assert main(["export", str(run), "--merged", str(out), "--gguf", str(tmp_path / "lora.gguf"), "--gguf-dtype", "f32"]) == 0
    assert not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    _, logits, _ = greedy(merged, tokenizer)
    assert torch.allclose(logits, adapted, atol=1e-4)
    _, plain, _ = greedy(AutoModelForCausalLM.from_pretrained(base), tokenizer)
    assert not torch.allclose(plain, adapted, atol=1e-3)  # the adapter really changes the model
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="lora.gguf", dtype=torch.float32)
    assert torch.allclose(greedy(back, tokenizer)[1], adapted, atol=1e-4)


def test_pickled_adapter_is_refused(trained_run, tmp_path):
    run, _ = make_adapter_run(trained_run / "model", tmp_path)
    weights = run / "model" / "adapter_model.safetensors"
    weights.rename(run / "model" / "adapter_model.bin")
    with pytest.raises(TailorError, match="pickled"):
        open_run(run)


def test_export_errors(trained_run, tmp_path, capsys):
    assert main(["export", str(trained_run)]) == 2
    assert "--merged" in capsys.readouterr().err
    assert main(["export", str(trained_run), "--gguf", str(tmp_path / "x.bin")]) == 2
    assert ".gguf" in capsys.readouterr().err
    assert main(["export", str(trained_run), "--merged", str(trained_run / "model")]) == 2
    assert "overwrite the run's own model" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), "--merged", str(tmp_path / "o")]) == 2


def test_gguf_refuses_other_architectures(tmp_path, tiny_model):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32))
    with pytest.raises(TailorError, match="llama, qwen2, gpt2; this model is 'gpt_neox'"):
        write_gguf(model, tokenizer, tmp_path / "neox.gguf")
    assert not list(tmp_path.glob("*.gguf*"))


def test_gguf_file_is_readable_like_any_new_file(trained_run, tmp_path):
    """Not mkstemp's private 0600: a runtime running as another user (an Ollama service) must read it."""
    import os

    loaded = open_run(trained_run)
    old = os.umask(0o022)
    try:
        out = write_gguf(loaded.model, loaded.tokenizer, tmp_path / "a.gguf", "f32")
        assert out.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        out = write_gguf(loaded.model, loaded.tokenizer, tmp_path / "b.gguf", "f32")
        assert out.stat().st_mode & 0o777 == 0o600  # the umask is respected, not overridden
    finally:
        os.umask(old)


def test_encoder_decoder_runs_export_merged_but_not_gguf(tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    from tiny import make_seq2seq

    folder = make_seq2seq(tmp_path / "t5")
    out = tmp_path / "merged-t5"
    assert main(["export", str(folder), "--merged", str(out)]) == 0
    a, b = AutoModelForSeq2SeqLM.from_pretrained(folder), AutoModelForSeq2SeqLM.from_pretrained(out)
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(a.generate(x, max_new_tokens=5, do_sample=False), b.generate(x, max_new_tokens=5, do_sample=False))
    assert open_run(folder).kind == "seq2seq"
    assert main(["export", str(folder), "--gguf", str(tmp_path / "t5.gguf")]) == 2
