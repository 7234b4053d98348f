"""model/README.md: a Hugging Face model card whose header parses as YAML, whose metrics are the run's,
written by `tailor run` and carried by `tailor export --merged`."""

import json

import yaml

from tailor.cli import main as cli
from tailor.config import load_config


def split_card(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def test_run_writes_a_card_with_the_runs_metrics_and_export_carries_it(tiny_config, tmp_path):
    path = tiny_config(train={"max_steps": 3, "eval_every": 3}, model={"lora": {"rank": 4}})
    assert cli(["run", str(path)]) == 0
    run = load_config(path).run_dir
    header, body = split_card((run / "model" / "README.md").read_text())
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert header["library_name"] == "transformers" and header["pipeline_tag"] == "text-generation"
    assert header["tags"] == ["tailor", "dialogue", "lora"] and header["datasets"] == ["dialogue.jsonl"]
    results = header["model-index"][0]["results"][0]["metrics"]
    assert {m["type"]: m["value"] for m in results} == {m: round(test["fine_tuned"][m], 4) for m in header["metrics"]}
    assert "perplexity" in header["metrics"]
    assert f"| perplexity | {test['base']['perplexity']:.4g} | {test['fine_tuned']['perplexity']:.4g} |" in body
    assert "## Use" in body and "## Limitations" in body and "LoRA rank 4" in body

    out = tmp_path / "merged"
    assert cli(["export", str(run), "--merged", str(out)]) == 0
    assert (out / "README.md").read_text() == (run / "model" / "README.md").read_text()
