"""tailor train CONFIG [overrides] [--resume]: fine-tune and keep the best model in runs/<name>/model."""

from __future__ import annotations

import json

from tailor.commands.common import add_job_arguments, config_from_args

NAME = "train"
HELP = "fine-tune a model from a config"


def add_arguments(parser) -> None:
    add_job_arguments(parser, "continue from the run folder's latest checkpoint")


def main(args) -> int:
    from tailor.workflow import train_job

    summary = train_job(config_from_args(args), resume=args.resume, overwrite=args.overwrite)
    print(json.dumps(summary["train"], indent=2))
    return 0
