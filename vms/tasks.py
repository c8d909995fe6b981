"""django-q2 entry points of vms: thin, take ids, call a service. The node beats are here
because a beat reports what placement counts free (vms/heartbeat.py)."""

from __future__ import annotations


def reconcile_nodes() -> int:
    from vms.reconcile import reconcile_nodes as run

    return run()


def expire_snapshots() -> int:
    from vms.services import snapshot_expire_due

    return len(snapshot_expire_due())


def warm_tend(pool_id: int) -> str:
    """One warm pool: discard the spares it must not hold, fill what it lacks."""
    from vms import warm

    return warm.tend_pool(pool_id)


def warm_tend_all() -> str:
    """Every warm pool, once a minute: what a lost tend task or a change the pools were
    not told of (a template edited outside the admin) left to do."""
    from vms import warm

    return "; ".join(warm.tend_all_pools()) or "no warm pools"


def disk_watch() -> str:
    """Every minute: stop the VMs that wrote past their disk where the engine cannot
    limit it (vms/disk_watch.py)."""
    from vms import disk_watch

    return disk_watch.watch_all()


# --- the fleet's beats ----------------------------------------------------------------


def fleet_sweep() -> str:
    """The site's cluster, once a minute (beside its keepers): beat for the nodes it
    serves, mark late nodes down and fail what waits for them."""
    from nodes import fleet
    from vms import heartbeat

    beaten = heartbeat.beat_served_nodes()
    swept = fleet.mark_late_nodes_down()
    return f"beat {beaten}; down {swept.marked_down}; failed {len(swept.failed_ops)}"


def node_beat(name: str) -> bool:
    """A node's own cluster, on its own schedule (cluster=name)."""
    from vms import heartbeat

    return heartbeat.beat_named(name)


def keeper_beat(cluster: str) -> None:
    """Each worker's keeper, every TT_NODE_BEAT s (operations/worker.py): in a node's own
    cluster, that node's beat; in the site's, the beat of the nodes the site serves, then
    the sweep that marks late nodes down."""
    from django.conf import settings

    from nodes import fleet
    from vms import heartbeat

    if cluster == settings.Q_CLUSTER["name"]:
        heartbeat.beat_served_nodes()
        fleet.mark_late_nodes_down()
    else:
        heartbeat.beat_named(cluster)
