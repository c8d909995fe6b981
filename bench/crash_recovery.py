"""How soon an operation ends after its task cluster is killed, and what it leaves behind.

Each round asks for an Env of 2 VMs (busybox, port 80) through env_create, as the
API does, with a real `manage.py tt_qcluster` running it. Once the operation runs
and has reached a random point of its progress, the cluster's whole process group
is killed with SIGKILL (a crash, an OOM kill, a careless redeploy) and started
again at once. Clock: from the kill to the operation's recorded end
(`finished_at`), whether it succeeded or failed. An operation still live
TT_OPERATION_LEASE + 90 s after its kill counts as stuck.

After the rounds, the database is compared with the node, item by item: domains,
runtime images, forwarded ports, denied and blacklisted addresses (nftables),
DHCP reservations. Then every Env is destroyed through the cluster and the node
must hold nothing. Orphans = items on one side only, plus anything left after
the destroys. Default settings (TT_OPERATION_LEASE 30 s); the target is a worst
case within 60 s and no stuck operation or orphan.

Runs on a throwaway node "bench" (see _common.py) and a throwaway SQLite
database, both removed on exit:

    .venv/bin/python bench/crash_recovery.py [--rounds 8] [--seed N] [--quick]

(--quick: 3 rounds, for bench/all.py.)
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import _common as c

LIMIT_S = 60


def run(rounds: int, seed: int) -> None:
    import io

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from envs.models import Env
    from envs.services import env_create, env_destroy
    from nodes.models import Node
    from operations.models import Operation
    from tests.integration import agreement
    from tests.integration.cluster import Cluster, kill_during, wait_until_done
    from vms.new_vms import NewVm

    opts = {k: v for k, v in c.NODE.items() if k != "name"}
    call_command("tt_prepare_node", c.NODE["name"], template=True, stdout=io.StringIO(), **opts)
    node = Node.objects.get(name=c.NODE["name"])
    user = get_user_model().objects.create_user(username="bench", password="bench-pw")
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="tt-bench-crash-"))
    cluster = Cluster(work / "cluster.log")
    cluster.start()
    delays: list[float] = []
    stuck = 0
    try:
        n = 0
        while len(delays) + stuck < rounds:
            n += 1
            specs = [NewVm(name=v, template="tt/busybox", mem_mb=128, ports=[80]) for v in ("a", "b")]
            op = env_create(owner=user, by=user, name=f"crash{n}", vms=specs)
            killed_at = kill_during(cluster, op, rng)
            if killed_at is None:
                print(f"  round {n}: the create ended before its kill point; again")
                continue
            killed = f"{op.status} at {op.progress} %"
            try:
                op = wait_until_done(op, killed_at + settings.TT_OPERATION_LEASE + 90)
            except AssertionError as exc:
                stuck += 1
                print(f"  round {n}: STUCK: {exc}")
                continue
            delay = op.finished_at.timestamp() - killed_at
            delays.append(delay)
            print(f"  round {n}: killed while {killed}; ended {op.status} (attempt {op.attempt}) "
                  f"{delay:.1f} s after the kill")
        orphans = _disagreements(agreement.on_node(node), agreement.in_database(node))
        for env in Env.objects.filter(status=Env.Status.ACTIVE):
            done = wait_until_done(env_destroy(env=env, by=user), time.time() + 180)
            if done.status != Operation.Status.SUCCEEDED:
                print(f"  destroy of {env.name} failed: {done.error_code}: {done.error_message}")
        left = agreement.on_node(node)
        orphans += sum(len(items) for items in left.values())
        if orphans:
            print(f"  orphans: node {left}")
    finally:
        cluster.close()
        shutil.rmtree(work, ignore_errors=True)
    worst = max(delays) if delays else float("nan")
    median = statistics.median(delays) if delays else float("nan")
    verdict = "meets" if worst <= LIMIT_S and not stuck and not orphans else "MISSES"
    print(f"  seed {seed}; target: worst <= {LIMIT_S} s, nothing stuck, no orphan: {verdict}")
    print(f"crash_recovery: worst {worst:.1f} s, median {median:.1f} s, stuck {stuck}, orphans {orphans}")


def _disagreements(node_has: dict, db_says: dict) -> int:
    count = 0
    for key in db_says:
        extra, missing = node_has[key] - db_says[key], db_says[key] - node_has[key]
        if extra or missing:
            print(f"  {key}: only on the node {extra}, only in the database {missing}")
        count += len(extra) + len(missing)
    return count


def main() -> None:
    parser = c.arg_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=None,
                        help="kills that land during a create (default 8)")
    parser.add_argument("--quick", action="store_true", help="3 kills (bench/all.py)")
    parser.add_argument("--seed", type=int, default=None, help="the random kill points (default: the time)")
    args = parser.parse_args()
    args.rounds = args.rounds or (3 if args.quick else 8)
    c.require_root()
    seed = args.seed if args.seed is not None else int(time.time())
    c.header(f"crash_recovery: {args.rounds} kills of the task cluster during env_create")
    with c.Cleanup() as cleanup:
        c.throwaway_site(cleanup, inline_tasks=False)
        cleanup.add("bench node", c.remove_node)
        run(args.rounds, seed)


if __name__ == "__main__":
    main()
