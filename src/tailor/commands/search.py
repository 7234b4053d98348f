"""tailor search CONFIG [overrides] --trials N: an Optuna study over the config's `search.space`.

The study lives in <output_dir>/<name>-search/study.db: rerun the same command to continue an
interrupted search, or start it in several terminals (or machines sharing the folder) to run
trials in parallel. The best config lands in best.yaml, ready for `tailor train`.
"""

from __future__ import annotations

from tailor.commands.common import add_config_arguments, config_from_args

NAME = "search"
HELP = "hyperparameter search (Optuna) over the config's search.space"


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--trials", type=int, default=None,
                        help="finished trials the study aims for (default: search.trials)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds after which no new trial starts (default: search.timeout; 0 = none)")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing search folder and start again")
    parser.add_argument("--report", action="store_true", help="only rewrite best.yaml, the table, plots and report.html")


def main(args) -> int:
    from tailor.errors import TailorError
    from tailor.search.study import open_study, search_dir, search_job

    cfg = config_from_args(args)
    if args.trials is not None and args.trials < 1:
        raise TailorError(f"--trials must be at least 1, got {args.trials}.")
    if args.report:
        from tailor.search.report import write_outputs

        folder = search_dir(cfg)
        if not (folder / "study.db").is_file():
            raise TailorError(f"{folder} holds no study yet; run `tailor search {args.config}` first.")
        write_outputs(cfg, open_study(cfg, folder), folder)
        return 0
    search_job(cfg, trials=args.trials, timeout=args.timeout, overwrite=args.overwrite)
    return 0
