"""tailor eval RUN_DIR [--data FILE]: score a run's model on a split of its own data, or on any file in the
task's format (a held-out corpus, another domain): perplexity, accuracy, replies, as the task reports them."""

from __future__ import annotations

import json

NAME = "eval"
HELP = "evaluate a run's model on its data's test (or validation) split, or on any data file (--data)"


def add_arguments(parser) -> None:
    parser.add_argument("run", help="run folder (runs/<name>) or model folder with tailor.yaml")
    parser.add_argument("--split", choices=["test", "validation"], default=None,
                        help="which split of the run's own data (default: test)")
    parser.add_argument("--data", default=None, metavar="FILE",
                        help="score on FILE instead, every record of it, read and checked as the task reads data.source")


def main(args) -> int:
    from tailor.api import evaluate
    from tailor.errors import TailorError

    if args.data and args.split:
        raise TailorError("--split picks a split of the run's own data; --data FILE is scored whole. Give one of them.")
    print(json.dumps(evaluate(args.run, args.split or "test", data=args.data), indent=2))
    return 0
