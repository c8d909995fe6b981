"""django-q2 entry points: thin, take ids, call the runner or a service."""

from __future__ import annotations

from envs import runner, worker


def run_operation(operation_id: int) -> str:
    if worker.stop_requested():
        # The cluster is stopping: leave the operation to the next one.
        runner.dispatch(operation_id)
        return "deferred"
    op = runner.execute(operation_id)
    return op.status if op is not None else "missing"


def recover_operations() -> int:
    from envs.recovery import recover

    return recover()


def expire_envs() -> int:
    from envs.services import env_expire_due

    return len(env_expire_due())


def reconcile_nodes() -> int:
    from vms.reconcile import reconcile_nodes as run

    return run()


def expire_snapshots() -> int:
    from vms.services import snapshot_expire_due

    return len(snapshot_expire_due())
