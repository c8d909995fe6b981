"""django-q2 entry points: thin, take ids, call services."""

from __future__ import annotations

from envs import operations


def run_operation(operation_id: int) -> str:
    op = operations.execute(operation_id)
    return op.status if op is not None else "missing"


def expire_envs() -> int:
    from envs.services import env_expire_due

    return len(env_expire_due())


def reconcile_nodes() -> int:
    from vms.reconcile import reconcile_nodes as run

    return run()


def expire_snapshots() -> int:
    from vms.services import snapshot_expire_due

    return len(snapshot_expire_due())
