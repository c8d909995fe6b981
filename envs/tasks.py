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


def fleet_sweep() -> str:
    """The site's cluster, once a minute (beside its keepers): beat for the nodes it
    serves, mark late nodes down and fail what waits for them."""
    from nodes import fleet
    from vms import heartbeat

    beaten = heartbeat.beat_served_nodes()
    swept = fleet.sweep()
    return f"beat {beaten}; down {swept.marked_down}; failed {len(swept.failed_ops)}"


def node_beat(name: str) -> bool:
    """A node's own cluster, on its own schedule (cluster=name)."""
    from vms import heartbeat

    return heartbeat.beat_named(name)


def warm_tend(pool_id: int) -> str:
    """One warm pool: discard the spares it must not hold, fill what it lacks."""
    from vms import warm

    return warm.tend(pool_id)


def warm_tend_all() -> str:
    """Every warm pool, once a minute: what a lost tend task or a change the pools were
    not told of (a template edited outside the admin) left to do."""
    from vms import warm

    return "; ".join(warm.tend_all()) or "no warm pools"


def disk_watch() -> str:
    """Every minute: stop the VMs that wrote past their disk where the engine cannot
    limit it (vms/disk_watch.py)."""
    from vms import disk_watch

    return disk_watch.watch_all()
