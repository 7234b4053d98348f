"""`tailor <command>`: subcommands are discovered from tailor.commands.

Errors users can fix (TailorError) print one paragraph and exit with 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from tailor.errors import TailorError


def commands() -> dict:
    import tailor.commands as pkg

    found = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"tailor.commands.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "main"):
            found[module.NAME] = module
    return dict(sorted(found.items()))


def quiet_libraries() -> None:
    """Keep the console for tailor's own progress bars and results."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    from tailor import device

    if not device.cuda_available():
        # transformers and accelerate import DeepSpeed when it is installed; without this it probes for
        # accelerators and prints a warning in the middle of a training run's progress bar.
        os.environ.setdefault("DS_ACCELERATOR", device.CPU)

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tailor", description="Tailor a pretrained language model to one task.")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for any command (0 = torch's default; on a busy machine 1 can be much faster)")
    from tailor.device import CHOICES

    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    found = commands()
    for name, module in found.items():
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.add_argument("--device", choices=list(CHOICES), default=None,
                       help="where the model runs: auto (CUDA, then MPS, then CPU; the default), cpu, cuda or mps; "
                       "for commands that take a config it is train.device")
    args, extra = parser.parse_known_args(argv)
    # Overrides may follow options (`tailor run cfg.yaml --resume train.max_steps=5`).
    if extra:
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    try:
        quiet_libraries()
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        if args.device and not hasattr(args, "config"):  # a config's commands take it as train.device
            from tailor import device

            device.choose(args.device)
        return found[args.command].main(args) or 0
    except TailorError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The `tailor` console script: on mimalloc where it can be preloaded (tailor/preload.py), then `main`."""
    from tailor.preload import preload

    preload()
    sys.exit(main())


if __name__ == "__main__":
    entry()
