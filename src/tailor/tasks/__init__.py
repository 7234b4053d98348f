"""Task families: one module per family, each providing the Task interface (tasks/base.py), so the training
loop and the workflow are one. `get_task(cfg.task)` resolves the module once; callers pass it down."""

from __future__ import annotations

import importlib
from typing import cast

from tailor.errors import TailorError
from tailor.tasks.base import Task

TASKS = {
    "dialogue": "tailor.tasks.dialogue",
    "translation": "tailor.tasks.translation",
    "classification": "tailor.tasks.classification",
    "text": "tailor.tasks.text",
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise TailorError(f"unknown task '{name}'; known tasks: {', '.join(sorted(TASKS))}.")
    return cast(Task, importlib.import_module(TASKS[name]))
