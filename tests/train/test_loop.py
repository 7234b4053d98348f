import math
import os
import signal
import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import read_jsonl
from tailor.config import load_config
from tailor.data.batches import collate
from tailor.train.loop import micro_batches
from tailor.train.loss import token_stats
from tailor.workflow import train_job
from cli_process import Started, tailor_cli


def test_supervised_only_loss_matches_full_logits_cross_entropy(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = torch.randint(0, 100, (2, 12))
    labels = ids.clone()
    labels[:, :7] = -100
    labels[1, 10:] = -100
    batch = collate([{"input_ids": ids[i].tolist(), "labels": labels[i].tolist()} for i in range(2)], 0)
    nll, n, _ = token_stats(model, batch)
    logits = model(input_ids=ids).logits[:, :-1]
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                            ignore_index=-100, reduction="sum")
    assert n == int((labels[:, 1:] != -100).sum())
    torch.testing.assert_close(nll, ref, rtol=1e-5, atol=1e-5)


def test_micro_batches_resume_mid_stream_sees_the_same_batches():
    lengths = [5, 9, 3, 7, 2, 8, 4, 6, 1, 10]
    stream = micro_batches(lengths, 3, seed=1, start=0)
    first = [next(stream) for _ in range(9)]
    resumed = micro_batches(lengths, 3, seed=1, start=5)
    assert [next(resumed) for _ in range(4)] == first[5:]


def test_training_lowers_loss_and_writes_loadable_model(tiny_config):
    cfg = load_config(tiny_config(train={"max_steps": 30, "learning_rate": 3e-3, "eval_every": 10, "save_every": 10}))
    summary = train_job(cfg)
    run = cfg.run_dir
    log = read_jsonl(run / "log.jsonl")
    losses = [r["loss"] for r in log if r["split"] == "train"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 * 0.85
    val = [r for r in log if r["split"] == "validation"]
    assert len(val) == 3 and all(math.isfinite(r["perplexity"]) for r in val)
    assert val[-1]["loss"] < val[0]["loss"]
    assert summary["train"]["steps"] == 30
    # The kept model is a plain Hugging Face folder with the run's config and chat template.
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    assert model.config.num_hidden_layers == 2
    assert (run / "model" / "tailor.yaml").is_file() and (run / "model" / "metrics.json").is_file()
    assert "chat_template" in (run / "model" / "tokenizer_config.json").read_text() or (run / "model" / "chat_template.jinja").is_file()
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000030"
    assert '"complete"' in (run / "status.json").read_text()


def test_early_stopping_keeps_best(tiny_config):
    # A huge learning rate makes validation worse after the first check; patience 1 stops at the second.
    cfg = load_config(tiny_config(train={"max_steps": 40, "learning_rate": 0.5, "eval_every": 2, "patience": 1,
                                         "warmup_steps": 0, "max_grad_norm": 0}))
    summary = train_job(cfg)
    assert summary["train"]["stopped_early"]
    assert summary["train"]["steps"] < 40
    val = [r for r in read_jsonl(cfg.run_dir / "log.jsonl") if r["split"] == "validation"]
    assert summary["train"]["best_val_loss"] == min(r["loss"] for r in val)


def run_cli(*args, **kw):
    return tailor_cli(*args, **kw)


@pytest.fixture(scope="session")
def dropout_model(tiny_model, tmp_path_factory):
    """The tiny model with attention dropout: its training draws random numbers every step, so a resume that
    does not restore the RNG state gives different losses."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-dropout")
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attention_dropout=0.3)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    return folder


def test_resume_after_sigkill_reaches_the_same_loss(tiny_config, dropout_model, tmp_path):
    from tailor.runs import run_status

    train = {"max_steps": 24, "save_every": 3, "eval_every": 12, "log_every": 1, "learning_rate": 2e-3}
    cfg_path = tiny_config(train=train, model={"name": str(dropout_model)})
    # The uninterrupted reference run.
    ref = run_cli("train", cfg_path, "name=straight")
    assert ref.returncode == 0, ref.stderr
    # The same run, killed with SIGKILL once a checkpoint exists, then resumed.
    run_dir = tmp_path / "runs" / "killed"
    proc = Started("train", cfg_path, "name=killed")
    deadline = time.time() + 120
    while not (run_dir / "checkpoints" / "latest").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert latest != "step-000024", "the run finished before it could be killed"
    assert '"running"' in (run_dir / "status.json").read_text()  # never presented as complete
    assert run_status(run_dir)["status"] == "interrupted"  # and read as what it is: its process is gone
    reported = run_cli("report", run_dir)
    assert reported.returncode == 0 and "interrupted" in reported.stdout, reported.stderr
    resumed = run_cli("train", cfg_path, "name=killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    straight = [r for r in read_jsonl(tmp_path / "runs" / "straight" / "log.jsonl") if r["split"] == "train"]
    again = [r for r in read_jsonl(run_dir / "log.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in again] == list(range(1, 25))
    for a, b in zip(straight, again):  # every step: dropout masks included, the resumed run is the same run
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), a["step"]
        assert b["lr"] == pytest.approx(a["lr"])
