"""tailor run CONFIG: evaluate the base model, fine-tune, evaluate again, compare side by side."""

from __future__ import annotations

from tailor.commands.common import add_job_arguments, config_from_args

NAME = "run"
HELP = "base eval -> fine-tune -> eval -> comparison table, all in runs/<name>/"


def add_arguments(parser) -> None:
    add_job_arguments(parser, "continue an interrupted run")


def main(args) -> int:
    from tailor.workflow import run_job

    run_job(config_from_args(args), resume=args.resume, overwrite=args.overwrite)
    return 0
