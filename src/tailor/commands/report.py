"""tailor report RUN_DIR: (re)write the run's self-contained report.html from its folder alone.

Recomputes the base-vs-fine-tuned bootstrap comparison (comparison.json) when the run has
generated test samples, then writes report.html: config, data statistics, loss and metric
curves, metrics table, sample outputs side by side, throughput and environment.
"""

from __future__ import annotations

NAME = "report"
HELP = "write a run folder's report.html (plots, metrics, samples; viewable offline)"


def add_arguments(parser) -> None:
    parser.add_argument("run", help="run folder (runs/<name>)")
    parser.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default: the run's eval.bootstrap)")


def main(args) -> int:
    from pathlib import Path

    from tailor.errors import TailorError
    from tailor.report import compare_run, write_report
    from tailor.runs import run_status

    run = Path(args.run)
    if not (run / "config.yaml").is_file():
        raise TailorError(f"{run} is not a run folder (no config.yaml inside).")
    if (run / "samples.json").is_file():
        compare_run(run, resamples=args.bootstrap)
    status = run_status(run)
    if status.get("status") == "interrupted":
        print(f"{run}: interrupted (its process {status.get('pid')} on {status.get('host')} is gone); "
              "continue it with `tailor train CONFIG --resume`")
    print(write_report(run))
    return 0
