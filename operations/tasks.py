"""django-q2 entry points of the framework itself: thin, take ids, call the runner.

Each app keeps its own tasks (envs/tasks.py, vms/tasks.py, notifications/tasks.py) and
names only its own in a task path or a schedule's `func`.
"""

from __future__ import annotations

from operations import runner, worker


def run_operation(operation_id: int) -> str:
    if worker.stop_requested():
        # The cluster is stopping: leave the operation to the next one.
        runner.dispatch(operation_id)
        return "deferred"
    op = runner.execute(operation_id)
    return op.status if op is not None else "missing"


def recover_operations() -> int:
    from operations.recovery import recover

    return recover()
