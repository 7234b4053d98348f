"""Arguments shared by the commands that take a config."""

from __future__ import annotations

import argparse

from tailor.config import Config, load_config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config, e.g. configs/dialogue/smollm2-chitchat.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.learning_rate=1e-4 name=try2")


def add_job_arguments(parser: argparse.ArgumentParser, resume_help: str) -> None:
    """A training job's arguments: the config and its overrides, --resume, --overwrite."""
    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true", help=resume_help)
    parser.add_argument("--overwrite", action="store_true", help="delete an existing run folder of the same name first")


def config_from_args(args: argparse.Namespace) -> Config:
    """The config with its overrides; `--device X` is the override train.device=X."""
    device = getattr(args, "device", None)
    return load_config(args.config, [*args.overrides, *([f"train.device={device}"] if device else [])])
