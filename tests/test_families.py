"""Every model family x every task it can do x {full, frozen, LoRA}, on tiny random models built from each
family's config: trains (the loss falls on a repeated batch), saves, reloads with plain `from_pretrained`,
evaluates, generates where the task generates, and answers one request through the server.

The README's families x tasks table is this matrix."""

from pathlib import Path

import pytest
import torch
import yaml
from fastapi.testclient import TestClient
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from conftest import read_jsonl
from tiny import ASSETS, CAUSAL, ENCODERS, SEQ2SEQ, make_family
from tailor.cli import main as cli
from tailor.config import load_config
from tailor.errors import TailorError
from tailor.runs import load as open_run, load_weights
from tailor.serve.app import Limits, create_app
from tailor.tasks import get_task
from tailor.workflow import setup, train_job

TASKS = ASSETS / "tasks"
DATA = {
    "dialogue": {"source": str(ASSETS / "dialogue.jsonl")},
    "text": {"source": str(TASKS / "prompts.jsonl")},
    "translation": {"source": {"en": str(TASKS / "pairs.en"), "de": str(TASKS / "pairs.de")},
                    "columns": {"source": "en", "target": "de"}},
    "classification": {"source": str(TASKS / "sentiment.tsv"), "columns": {"text": "sentence"},
                       "label_names": ["negative", "positive"]},
}
FAMILY_TASKS = {**{f: ("dialogue", "text", "translation", "classification") for f in CAUSAL},
                **{f: ("classification",) for f in ENCODERS},
                **{f: ("translation", "dialogue") for f in SEQ2SEQ}}
# Every cell fully fine-tuned; frozen and LoRA on each family's first task (their code paths are per family).
CELLS = [(f, t, "full") for f, tasks in FAMILY_TASKS.items() for t in tasks] + \
        [(f, tasks[0], mode) for f, tasks in FAMILY_TASKS.items() for mode in ("frozen", "lora")]
LOADERS = {"classification": AutoModelForSequenceClassification}


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    made = {}

    def get(family: str) -> Path:
        if family not in made:
            made[family] = make_family(tmp_path_factory.mktemp(family), family)
        return made[family]

    return get


def config(tmp_path: Path, folder: Path, task: str, mode: str) -> Path:
    model = {"name": str(folder), "max_length": 128}
    if mode == "lora":
        model["lora"] = {"rank": 8, "alpha": 16, "dropout": 0.0}
    elif mode == "frozen":
        model["freeze"] = "body" if task == "classification" else "embeddings"
    data = {**DATA[task], "val_fraction": 0.3, "test_fraction": 0.3, "max_train_samples": 4}
    # 4 training samples in one micro-batch: every step sees the same batch, so its loss must fall.
    cfg = {"name": "cell", "task": task, "output_dir": str(tmp_path / "runs"), "model": model, "data": data,
           "train": {"learning_rate": 2e-2 if mode != "full" else 5e-3, "batch_size": 4, "max_steps": 8,
                     "eval_every": 0, "save_every": 0, "log_every": 1, "precision": "fp32", "warmup_steps": 0,
                     "schedule": "constant"},
           "eval": {"batch_size": 4, "generate_samples": 2, "show_samples": 0, "val_generate_samples": 0},
           "decode": {"max_new_tokens": 4, "batch_size": 4}}
    path = tmp_path / "cell.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def request(client: TestClient, task: str, kind: str):
    if task == "classification":
        return client.post("/v1/classify", json={"input": ["a fine film"]})
    if task == "text" and kind != "seq2seq":
        return client.post("/v1/completions", json={"prompt": "Once upon", "max_tokens": 4})
    return client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4})


@pytest.mark.parametrize("family,task,mode", CELLS, ids=["-".join(c) for c in CELLS])
def test_family_task_mode(family, task, mode, families, tmp_path):
    cfg = load_config(config(tmp_path, families(family), task, mode))
    train_job(cfg)
    steps = [r["loss"] for r in read_jsonl(cfg.run_dir / "log.jsonl") if r["split"] == "train"]
    assert len(steps) == 8 and steps[-1] < steps[0], steps  # the same batch at every step: its loss falls

    folder = cfg.run_dir / "model"
    loader = LOADERS.get(task) or (AutoModelForSeq2SeqLM if family in SEQ2SEQ else AutoModelForCausalLM)
    plain = loader.from_pretrained(folder)  # a plain Hugging Face folder, adapters merged
    assert plain.config.model_type == family

    task_module = get_task(task)
    _, tokenizer, splits = setup(cfg, task_module)
    tuned, _ = load_weights(folder, cfg.model.dtype)
    metrics, outputs = task_module.evaluate(tuned, tokenizer, splits.test, cfg, False, "fine-tuned")
    assert torch.isfinite(torch.tensor(metrics["loss"]))
    if task != "classification":  # the generating tasks generated their outputs
        assert outputs and all(isinstance(o["text"], str) for o in outputs)
    if task == "dialogue":  # and `tailor generate RUN` replies with the run's model, of either kind
        out = tmp_path / "replies.jsonl"
        assert cli(["generate", str(cfg.run_dir), "--prompt", "hello", "--output", str(out)]) == 0
        assert len(read_jsonl(out)) == 1

    loaded = open_run(cfg.run_dir)
    with TestClient(create_app(loaded, Limits(max_tokens=8), None)) as client:
        answer = request(client, task, loaded.kind)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    if task == "classification":
        assert body["data"][0]["label"] in ("negative", "positive")
    else:
        assert body["usage"]["completion_tokens"] >= 1


def test_lora_targets_come_from_the_family_and_a_wrong_target_names_the_layers(families, tmp_path):
    from tailor.models.lora import default_targets

    expected = {"gpt2": ["c_attn"], "bert": ["query", "value"], "distilbert": ["q_lin", "v_lin"], "t5": ["q", "v"],
                "phi3": ["qkv_proj"], "qwen2": ["q_proj", "v_proj"]}
    for family, targets in expected.items():
        model = (AutoModelForSeq2SeqLM if family in SEQ2SEQ else AutoModelForCausalLM if family in CAUSAL
                 else AutoModelForSequenceClassification).from_pretrained(families(family))
        assert default_targets(model) == targets
    path = config(tmp_path, families("gpt2"), "dialogue", "lora")
    raw = yaml.safe_load(path.read_text())
    raw["model"]["lora"]["target_modules"] = ["q_proj"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(TailorError, match=r"q_proj matches no layer of this gpt2 model; its layers are: .*c_attn"):
        train_job(load_config(path))
    assert not load_config(path).run_dir.exists()


def test_a_dotted_lora_target_matches_as_peft_matches_it(families):
    from tailor.models.lora import check_targets

    model = AutoModelForCausalLM.from_pretrained(families("llama"))
    check_targets(model, ["self_attn.q_proj", "v_proj"])  # peft matches a module name's last dotted parts
    with pytest.raises(TailorError, match="proj matches no layer"):
        check_targets(model, ["proj"])  # a bare suffix of a name is no match for peft either
