"""Every registered task module provides the whole Task interface (tasks/base.py), with the Protocol's
parameters, so the workflow and the loop can rely on it without duck typing."""

import inspect
import types

import pytest

from tailor.errors import TailorError
from tailor.tasks import TASKS, get_task
from tailor.tasks.base import Task


def protocol_members() -> list[str]:
    """The Protocol's members as written in tasks/base.py (methods and the OUTPUTS attribute)."""
    methods = [n for n, v in vars(Task).items() if inspect.isfunction(v) and not n.startswith("_")]
    return sorted(methods + list(Task.__annotations__))


def test_the_protocol_lists_what_the_workflow_uses():
    assert {"OUTPUTS", "load", "prepare", "collate", "count_targets", "token_stats", "validate", "evaluate",
            "with_test_data", "sample_record", "metrics_table", "side_by_side"} <= set(protocol_members())


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_provides_the_interface(name):
    task = get_task(name)
    assert isinstance(task, Task), [m for m in protocol_members() if not hasattr(task, m)]
    assert isinstance(task.OUTPUTS, str) and task.OUTPUTS
    for member in protocol_members():
        want = getattr(Task, member, None)
        if not inspect.isfunction(want):
            continue
        required = [p.name for p in list(inspect.signature(want).parameters.values())[1:]
                    if p.default is inspect.Parameter.empty]
        have = inspect.signature(getattr(task, member)).parameters
        assert len(have) >= len(required), f"{name}.{member}{inspect.signature(getattr(task, member))}"
        extra_required = [p for p in list(have.values())[len(required):] if p.default is inspect.Parameter.empty]
        assert not extra_required, f"{name}.{member} needs more arguments than the interface passes"


@pytest.mark.parametrize("missing", ["OUTPUTS", "with_test_data", "side_by_side"])
def test_a_module_lacking_a_member_is_not_a_task(missing):
    real = get_task("dialogue")
    partial = types.ModuleType("partial")
    partial.__dict__.update({k: v for k, v in vars(real).items() if k != missing})
    assert isinstance(real, Task) and not isinstance(partial, Task)


def test_an_unknown_task_is_a_clear_error():
    with pytest.raises(TailorError, match="known tasks: classification, dialogue, text, translation"):
        get_task("summaries")
