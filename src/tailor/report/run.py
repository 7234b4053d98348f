"""Base vs fine-tuned on a run's test prompts: paired bootstrap intervals, saved as comparison.json."""

from __future__ import annotations

import json
from pathlib import Path

from tailor.eval.compare import bootstrap_deltas, measure
from tailor.fsutil import write_json


def reference_of(record: dict) -> str | None:
    """The reference output of a samples.json / compare.json record, whatever the task family."""
    for key in ("reference", "target"):
        if isinstance(record.get(key), str):
            return record[key]
    messages = record.get("messages")
    if messages and messages[-1]["role"] == "assistant":
        return messages[-1]["content"]
    return None


def input_of(record: dict) -> str:
    """The input of a record as plain text: the conversation history, the source or the text."""
    messages = record.get("messages")
    if messages:
        history = messages[:-1] if messages[-1]["role"] == "assistant" and "reference" not in record else messages
        return "\n".join(f"{m['role']}: {m['content']}" for m in history if m["role"] != "system")
    return str(record.get("source") or record.get("text") or record.get("prompt") or "")


def measure_records(records: list[dict], side: str) -> dict:
    """Per-sample measurements of one side ('base', 'fine_tuned', 'a', 'b') of paired records."""
    replies = [r[side] for r in records]
    if records and all(isinstance(r.get("label"), str) for r in records):
        return measure(replies, labels=[r["label"] for r in records])
    refs = [reference_of(r) for r in records]
    return measure(replies, refs if records and all(x is not None for x in refs) else None)


def read_config(run_dir: Path) -> dict:
    import yaml

    path = run_dir / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def compare_run(run_dir: str | Path, resamples: int | None = None, confidence: float | None = None,
                seed: int | None = None) -> dict | None:
    """Bootstrap base vs fine-tuned over the run's generated test samples; None when there are none."""
    run_dir = Path(run_dir)
    samples = run_dir / "samples.json"
    if not samples.is_file():
        return None
    records = [r for r in json.loads(samples.read_text()) if r.get("base") and r.get("fine_tuned")]
    if not records:
        return None
    cfg = read_config(run_dir)
    ev = cfg.get("eval", {})
    resamples = ev.get("bootstrap", 1000) if resamples is None else resamples
    confidence = ev.get("confidence", 0.95) if confidence is None else confidence
    seed = cfg.get("train", {}).get("seed", 0) if seed is None else seed
    table = bootstrap_deltas(measure_records(records, "base"), measure_records(records, "fine_tuned"),
                             resamples, confidence, seed)
    result = {"a": "base", "b": "fine-tuned", "samples": len(records), "resamples": resamples,
              "confidence": confidence, "seed": seed, "metrics": table}
    write_json(run_dir / "comparison.json", result)
    return result
