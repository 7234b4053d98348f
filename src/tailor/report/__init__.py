"""What a run reports: console tables, the base-vs-fine-tuned comparison and report.html.

    comparison_table                                  console text (tailor.report.console)
    compare_run(run_dir)                              paired bootstrap of base vs fine-tuned (tailor.report.run)
    write_report(run_dir)                             the self-contained report.html (tailor.report.html)
"""

from tailor.report.console import comparison_table  # noqa: F401


def write_report(run_dir, finishing=False):
    from tailor.report.html import write_report as write

    return write(run_dir, finishing)


def compare_run(run_dir, resamples=None, confidence=None, seed=None):
    from tailor.report.run import compare_run as compare

    return compare(run_dir, resamples, confidence, seed)
