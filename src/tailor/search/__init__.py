"""Hyperparameter search: an Optuna study whose trials are ordinary training runs.

    space.py   the search space over dotted config keys -> Optuna suggestions / grid
    study.py   the study (SQLite in the search folder), the objective, pruning, cleanup
    report.py  best config YAML, trial table, plots and a self-contained HTML report
"""
