import json

from task_fixtures import TASK_ASSETS, task_config  # noqa: F401  (fixtures)
from test_cli import tailor
from tailor.config import load_config
from tailor.data.tokenize import IGNORE
from tailor.tasks import get_task
from tailor.tasks.text import pack


def test_pack_fills_blocks_across_documents():
    blocks = pack([[1, 2, 3], [4, 5, 6, 7], [8]], 3, ["a:1", "a:2", "a:3"])
    assert [b["input_ids"] for b in blocks] == [[1, 2, 3], [4, 5, 6], [7, 8]]
    assert [b["origin"] for b in blocks] == ["a:1", "a:2", "a:2"]
    assert all(b["labels"] == b["input_ids"] for b in blocks)


def test_raw_corpus_cli_end_to_end_packs_full_sequences(task_config, tiny_model):
    cfg = task_config("text", {"name": str(tiny_model), "max_length": 24}, {"source": str(TASK_ASSETS / "corpus.txt")})
    result = tailor("run", cfg)
    assert result.returncode == 0, result.stderr
    assert "perplexity (trained tokens)" in result.stdout
    run = cfg.parent / "runs" / "tiny"
    stats = json.loads((run / "data_stats.json").read_text())
    assert stats["mode"] == "raw text, packed"
    assert stats["train_supervised_tokens"] == stats["train_tokens"] - stats["samples"]["train"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert "rougeL" in metrics["test"]["fine_tuned"]


def test_packed_samples_are_full_length(task_config, tiny_model):
    cfg = load_config(task_config("text", {"name": str(tiny_model), "max_length": 16}, {"source": str(TASK_ASSETS / "corpus.txt")}))
    task = get_task("text")
    model, tok = task.load(cfg)
    splits = task.prepare(cfg, tok, 1 << 20)
    lengths = [len(s["input_ids"]) for s in splits.train]
    assert lengths.count(16) >= len(lengths) - 1 and max(lengths) == 16


def test_prompt_completion_masks_the_prompt(task_config, tiny_model):
    cfg = load_config(task_config("text", {"name": str(tiny_model)}, {"source": str(TASK_ASSETS / "prompts.jsonl"),
                                                                     "template": "Task: {prompt}\n"}))
    task = get_task("text")
    model, tok = task.load(cfg)
    splits = task.prepare(cfg, tok, 1 << 20)
    s = splits.train[0]
    supervised = tok.decode([t for t, l in zip(s["input_ids"], s["labels"]) if l != IGNORE])
    assert supervised == s["reference"] + tok.eos_token
    assert tok.decode(s["input_ids"]).startswith("Task: Write a sentence about")
    result = tailor("train", task_config("text", {"name": str(tiny_model)}, {"source": str(TASK_ASSETS / "prompts.jsonl")}, name="pairs"))
    assert result.returncode == 0, result.stderr


def test_packed_reference_stops_at_the_end_of_its_document(task_config, tiny_model):
    cfg = load_config(task_config("text", {"name": str(tiny_model), "max_length": 64}, {"source": str(TASK_ASSETS / "corpus.txt")}))
    task = get_task("text")
    _, tok = task.load(cfg)
    splits = task.prepare(cfg, tok, 1 << 20)
    samples = [s for split in (splits.train, splits.validation, splits.test) for s in split]
    crossing = 0
    for s in samples:
        rest = s["input_ids"][len(s["prompt_ids"]):]
        if tok.eos_token_id in rest:
            crossing += 1
            assert s["reference"] == tok.decode(rest[:rest.index(tok.eos_token_id)], skip_special_tokens=True)
        else:
            assert s["reference"] == tok.decode(rest, skip_special_tokens=True)
    assert crossing  # windows of 64 tokens over one-line documents do run into the next document
