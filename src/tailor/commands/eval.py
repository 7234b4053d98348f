"""tailor eval RUN_DIR: score a run's model on a split of its own data (perplexity, accuracy, replies)."""

from __future__ import annotations

import json

NAME = "eval"
HELP = "evaluate a run's model on its data's test (or validation) split"


def add_arguments(parser) -> None:
    parser.add_argument("run", help="run folder (runs/<name>) or model folder with tailor.yaml")
    parser.add_argument("--split", choices=["test", "validation"], default="test")


def main(args) -> int:
    from tailor.api import evaluate

    print(json.dumps(evaluate(args.run, args.split), indent=2))
    return 0
