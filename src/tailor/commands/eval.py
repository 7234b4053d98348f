"""tailor eval RUN_DIR: score a run's model on a split of its own data (perplexity, accuracy, replies)."""

from __future__ import annotations

import json

NAME = "eval"
HELP = "evaluate a run's model on its data's test (or validation) split"


def add_arguments(parser) -> None:
    parser.add_argument("run", help="run folder (runs/<name>) or model folder with tailor.yaml")
    parser.add_argument("--split", choices=["test", "validation"], default="test")


def main(args) -> int:
    from tailor.models.load import context_length
    from tailor.precision import use_half
    from tailor.runs import load_run
    from tailor.tasks import get_task

    cfg, model, tokenizer = load_run(args.run)
    task = get_task(cfg.task)
    splits = task.prepare(cfg, tokenizer, context_length(model))
    metrics, _ = task.evaluate(model, tokenizer, splits[args.split], cfg, use_half(cfg.train.precision), args.split)
    print(json.dumps(metrics, indent=2))
    return 0
