"""data.chat_format: a base model (no chat template) fine-tuned for dialogue renders the same tokens at
training, at `tailor generate`, at `tailor serve` and in the exported GGUF's chat template."""

import gguf
import pytest
from fastapi.testclient import TestClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import read_jsonl
from tiny import ASSETS, make_family
from tailor.cli import main as cli
from tailor.config import load_config
from tailor.data import chat_format
from tailor.data.tokenize import IGNORE, encode
from tailor.export.gguf_file import write_gguf
from tailor.generate.inputs import prompt_tokens
from tailor.runs import load as open_run
from tailor.serve import engine as serve_engine
from tailor.serve.app import Limits, create_app
from tailor.tasks import get_task
from tailor.workflow import setup, train_job

HISTORY = [{"role": "user", "content": "Hi! How are you today?"}, {"role": "assistant", "content": "Great, thanks."},
           {"role": "user", "content": "What did you do at the weekend?"}]
REPLY = {"role": "assistant", "content": "I went for a long walk."}
CUSTOM = ("{% for m in messages %}{{ '### ' + m['role'] + ':\\n' + m['content'] + eos_token + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '### assistant:\\n' }}{% endif %}")


@pytest.fixture(scope="module")
def base_models(tmp_path_factory):
    """GPT-2 and Llama base models: tokenizers without a chat template or ChatML tokens."""
    return {f: make_family(tmp_path_factory.mktemp(f"{f}-base"), f, chat_template=False) for f in ("gpt2", "llama")}


def run_config(tmp_path, model, fmt, lora=0):
    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({
        "name": "chat", "task": "dialogue", "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model), "max_length": 128, "lora": {"rank": lora}},
        "data": {"source": str(ASSETS / "dialogue.jsonl"), "chat_format": fmt, "val_fraction": 0.3, "test_fraction": 0.3},
        "train": {"learning_rate": 5e-3, "batch_size": 4, "max_steps": 4, "eval_every": 0, "save_every": 0,
                  "log_every": 1, "precision": "fp32", "warmup_steps": 0},
        "eval": {"val_generate_samples": 0}, "decode": {"max_new_tokens": 4}}))
    return path


def test_separator_joins_turns_with_eos_and_supervises_reply_and_eos(base_models):
    tokenizer = AutoTokenizer.from_pretrained(base_models["gpt2"])
    assert not tokenizer.chat_template and chat_format.apply(tokenizer, "auto") == []  # auto: a base model -> separator
    enc = encode(tokenizer, HISTORY + [REPLY])
    eos = tokenizer.eos_token_id
    assert tokenizer.decode(enc["input_ids"]) == "".join(m["content"] + tokenizer.eos_token for m in HISTORY + [REPLY])
    trained = [t for t, label in zip(enc["input_ids"], enc["labels"]) if label != IGNORE]
    assert trained == tokenizer(REPLY["content"], add_special_tokens=False)["input_ids"] + [eos]


def test_chatml_adds_its_tokens_and_the_model_grows_to_fit(base_models, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(base_models["gpt2"])
    before = len(tokenizer)
    added = chat_format.apply(tokenizer, "chatml")
    assert len(added) == 2 and len(tokenizer) == before + 2
    assert tokenizer.convert_ids_to_tokens(added) == ["<|im_start|>", "<|im_end|>"]
    cfg = load_config(run_config(tmp_path, base_models["gpt2"], "chatml", lora=4))
    train_job(cfg)
    model = AutoModelForCausalLM.from_pretrained(cfg.run_dir / "model")
    assert model.get_input_embeddings().num_embeddings == before + 2
    import torch

    base = AutoModelForCausalLM.from_pretrained(base_models["gpt2"])
    torch.manual_seed(cfg.train.seed)  # as tailor grew it: the new rows' starting values
    base.resize_token_embeddings(before + 2, mean_resizing=True)
    # LoRA trained the two new rows beside the adapters (peft's trainable tokens); the old rows stayed.
    new, start = model.get_input_embeddings().weight, base.get_input_embeddings().weight
    assert new[:before].equal(start[:before])
    assert not torch.allclose(new[before:], start[before:])


def test_a_missing_template_file_is_named(tmp_path, base_models):
    from tailor.errors import TailorError

    with pytest.raises(TailorError, match="chat template file .*nope.jinja does not exist"):
        load_config(run_config(tmp_path, base_models["gpt2"], str(tmp_path / "nope.jinja")))


@pytest.mark.parametrize("fmt", ["separator", "chatml", "custom"])
def test_training_generate_serve_and_gguf_render_the_same_tokens(fmt, base_models, tmp_path, monkeypatch):
    if fmt == "custom":
        (tmp_path / "custom.jinja").write_text(CUSTOM)
        fmt = str(tmp_path / "custom.jinja")
    cfg = load_config(run_config(tmp_path, base_models["llama"], fmt))
    train_job(cfg)
    _, tokenizer, _ = setup(cfg, get_task(cfg.task))  # the tokenizer as training renders with it
    trained = encode(tokenizer, HISTORY + [REPLY])
    at_training = [t for t, label in zip(trained["input_ids"], trained["labels"]) if label == IGNORE]
    steps = [r for r in read_jsonl(cfg.run_dir / "log.jsonl") if r["split"] == "train"]
    assert len(steps) == 4

    system = open_run(str(cfg.run_dir), names=True)  # what `tailor generate RUN` renders
    at_generate = prompt_tokens(system.tokenizer, HISTORY)

    seen = []
    real = serve_engine.Engine.submit
    monkeypatch.setattr(serve_engine.Engine, "submit", lambda self, seq: seen.append(seq.prompt) or real(self, seq))
    with TestClient(create_app(open_run(cfg.run_dir), Limits(max_tokens=4), None)) as client:
        answer = client.post("/v1/chat/completions", json={"messages": HISTORY, "max_tokens": 4})
    assert answer.status_code == 200, answer.text

    out = tmp_path / "model.gguf"
    assert cli(["export", str(cfg.run_dir), "--gguf", str(out), "--gguf-dtype", "f32"]) == 0
    field = gguf.GGUFReader(out).fields["tokenizer.chat_template"]
    embedded = bytes(field.parts[field.data[0]]).decode()
    from_gguf = AutoTokenizer.from_pretrained(cfg.run_dir / "model")
    from_gguf.chat_template = embedded  # the template a runtime reads from the file
    at_gguf = prompt_tokens(from_gguf, HISTORY)

    assert at_training == at_generate == seen[0] == at_gguf
    assert AutoTokenizer.from_pretrained(cfg.run_dir / "model").chat_template == embedded == tokenizer.chat_template
