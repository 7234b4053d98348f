"""tailor run CONFIG: evaluate the base model, fine-tune, evaluate again, compare side by side."""

from __future__ import annotations

from tailor.commands.common import add_config_arguments, config_from_args

NAME = "run"
HELP = "base eval -> fine-tune -> eval -> comparison table, all in runs/<name>/"


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing run folder of the same name first")


def main(args) -> int:
    from tailor.workflow import run_job

    run_job(config_from_args(args), resume=args.resume, overwrite=args.overwrite)
    return 0
