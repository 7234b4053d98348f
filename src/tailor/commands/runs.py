"""tailor runs [DIR]: a table of the run folders under DIR (default runs/): name, task, status
(complete, failed, interrupted, running), steps, best validation metric, test metrics, wall time and
size on disk. --json prints the same rows as JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

NAME = "runs"
HELP = "list the run folders under a directory with their status and results"

# The test metric shown per task: the one a reader of that task looks at first.
HEADLINE = {"dialogue": "perplexity", "text": "perplexity", "translation": "bleu", "classification": "accuracy"}


def add_arguments(parser) -> None:
    parser.add_argument("dir", nargs="?", default="runs", help="folder holding run folders (default: runs)")
    parser.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")


def size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def row(run: Path) -> dict:
    """One run folder's figures, from its own files."""
    import yaml

    from tailor.fsutil import read_json
    from tailor.runs import run_status

    try:
        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    task = config.get("task", "dialogue") if isinstance(config, dict) else "?"
    metrics = read_json(run / "metrics.json")
    train = metrics.get("train") or read_json(run / "train_summary.json").get("train") or {}
    steps = [json.loads(line).get("step", 0) for line in (run / "log.jsonl").read_text().splitlines()
             if line.strip()] if (run / "log.jsonl").is_file() else []
    kept = read_json(run / "model" / "metrics.json")
    headline = HEADLINE.get(task, "loss")
    test = (metrics.get("test") or {}).get("fine_tuned") or {}
    base = (metrics.get("test") or {}).get("base") or {}
    return {
        "name": run.name, "task": task, "status": run_status(run).get("status", "?"),
        "steps": max(steps, default=0),
        "best_validation_loss": (kept.get("validation") or {}).get("loss", train.get("best_val_loss")),
        "test_metric": headline, "test_base": base.get(headline), "test_fine_tuned": test.get(headline),
        "seconds": train.get("seconds"), "size_mb": round(size_mb(run), 1),
    }


def _fmt(value, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec) if isinstance(value, (int, float)) else str(value)


def main(args) -> int:
    from tailor.errors import TailorError

    root = Path(args.dir)
    if not root.is_dir():
        raise TailorError(f"{root} is not a folder of runs (tailor writes runs under output_dir, default runs/).")
    runs = sorted(p for p in root.iterdir() if (p / "config.yaml").is_file() and (p / "status.json").is_file())
    rows = [row(r) for r in runs]
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    if not rows:
        print(f"no run folders in {root}")
        return 0
    head = ["name", "task", "status", "steps", "best val loss", "test metric", "base -> fine-tuned", "wall s", "MB"]
    table = [[r["name"], r["task"], r["status"], str(r["steps"]), _fmt(r["best_validation_loss"]), r["test_metric"],
              f"{_fmt(r['test_base'])} -> {_fmt(r['test_fine_tuned'])}" if r["test_fine_tuned"] is not None else "-",
              _fmt(r["seconds"], ".0f"), _fmt(r["size_mb"], ".1f")] for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths)))
    return 0
