"""model/README.md: a Hugging Face model card for a run's model.

A YAML header the Hub reads (base model, library, pipeline tag, tags, datasets, and the test metrics
as `model-index` results) and a Markdown body: how the model was trained, the results table base vs
fine-tuned, how to load it, and its limitations. Written from the run folder's own files (config,
metrics.json or the kept model's validation metrics, data_stats.json), so `tailor run`, `tailor train`
and `tailor export --merged` write the same card.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tailor.config import Config
from tailor.fsutil import read_json, write_text

PIPELINE = {"dialogue": "text-generation", "text": "text-generation", "translation": "translation",
            "classification": "text-classification"}
# The headline metrics per task, in the order the card lists them.
HEADLINE = {"dialogue": ("perplexity", "token_accuracy", "chrf", "distinct_2", "stop_rate"),
            "text": ("perplexity", "token_accuracy", "rougeL"),
            "translation": ("bleu", "chrf", "perplexity"),
            "classification": ("accuracy", "macro_f1", "loss")}


def dataset_name(cfg: Config) -> str:
    source = cfg.data.source
    if isinstance(source, dict):
        return "+".join(Path(str(v)).name for v in source.values())
    return Path(str(source)).name


def card(cfg: Config, run_dir: Path) -> str:
    """The model card's text for the run in `run_dir`."""
    metrics = read_json(run_dir / "metrics.json")
    test = metrics.get("test") or {}
    kept = read_json(run_dir / "model" / "metrics.json")
    train = metrics.get("train") or (read_json(run_dir / "train_summary.json").get("train") or {})
    names = [m for m in HEADLINE[cfg.task] if isinstance((test.get("fine_tuned") or {}).get(m), (int, float))]
    results = [{"type": m, "value": round(float(test["fine_tuned"][m]), 4), "name": f"{m} (test split)"} for m in names]
    header = {
        "base_model": cfg.model.name,
        "library_name": "transformers",
        "pipeline_tag": PIPELINE[cfg.task],
        "tags": ["tailor", cfg.task] + (["lora"] if cfg.model.lora.rank else []),
        "datasets": [dataset_name(cfg)],
        "metrics": names,
    }
    if results:
        header["model-index"] = [{"name": cfg.name, "results": [{
            "task": {"type": PIPELINE[cfg.task]},
            "dataset": {"name": dataset_name(cfg), "type": dataset_name(cfg), "split": "test"},
            "metrics": results}]}]
    how = [f"- task: `{cfg.task}`; base model: `{cfg.model.name}`; data: `{dataset_name(cfg)}`",
           f"- fine-tuning: {'LoRA rank ' + str(cfg.model.lora.rank) if cfg.model.lora.rank else 'full' if cfg.model.freeze == 'none' else 'frozen ' + cfg.model.freeze}, "
           f"AdamW lr {cfg.train.learning_rate:g}, batch {cfg.train.batch_size} x {cfg.train.grad_accum}, "
           f"{cfg.train.schedule} schedule, max length {cfg.model.max_length}"]
    if train:
        how.append(f"- {train.get('steps')} optimizer steps in {train.get('seconds', 0):.0f} s on "
                   f"{train.get('device') or '?'} ({train.get('precision') or '?'}); the kept model is the one "
                   f"of step {train.get('best_step')} (best validation loss {train.get('best_val_loss', float('nan')):.4f})")
    body = [f"# {cfg.name}", "", f"Fine-tuned with tailor from `{cfg.model.name}`.", "",
            "## Training", "", *how, "", "## Results", ""]
    if names:
        body += ["| metric (test split) | base | fine-tuned |", "|---|---|---|"]
        body += [f"| {m} | {test.get('base', {}).get(m, float('nan')):.4g} | {test['fine_tuned'][m]:.4g} |" for m in names]
    elif kept.get("validation"):
        body += ["Validation at the kept step: " + ", ".join(
            f"{k} {v:.4g}" for k, v in kept["validation"].items() if isinstance(v, float))]
    else:
        body += ["No evaluation recorded (see the run folder's metrics)."]
    loader = {"classification": "AutoModelForSequenceClassification"}.get(cfg.task, "AutoModelForCausalLM")
    body += ["", "## Use", "", "```python", f"from transformers import AutoTokenizer, {loader}", "",
             f'model = {loader}.from_pretrained("PATH/TO/model")',
             'tokenizer = AutoTokenizer.from_pretrained("PATH/TO/model")  # with the chat template training used',
             "```", "", "or `tailor chat PATH/TO/run`, `tailor serve PATH/TO/run`.", "",
             "## Limitations", "",
             f"Trained on `{dataset_name(cfg)}` only, for the `{cfg.task}` task: it inherits the base model's biases "
             "and the data's, and the figures above hold for that data's test split, not for other domains."]
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + "\n".join(body) + "\n"


def write_card(cfg: Config, run_dir: Path) -> Path | None:
    """model/README.md for the run's kept model; None when the run kept no model."""
    folder = run_dir / "model"
    if not (folder / "config.json").is_file():
        return None
    path = folder / "README.md"
    write_text(path, card(cfg, run_dir))
    return path
