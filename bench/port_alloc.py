"""port_alloc: one request for 32 forwarded ports on a node with 10,000 ports used, against
the same request on an empty node (issue 22).

The request is vms.services.vm_set_ports (PUT /api/vms/<id>/ports/: the request that asks
for ports and nothing else) giving a VM without ports 32 TCP ports, the per-VM cap: its
whole database work (the owner's lock, the quota count, the VM's network claim, the 32
ports, the operation and its task enqueued on commit), timed from the call to its return.
Beside it, env_create (what the portal, the API and the admin call) of one VM with the
same 32 ports: placement and the VM's address on top. Both nodes have the same range,
20000-30031 (10,032 ports). On the full one, 10 VMs of another user hold 1,000 ports each,
10,000 spread at random, so exactly the 32 asked for are free: the worst case, where
sampling cannot find them and allocation must read the whole range (once, not once per
port). After each timed request its ports (and the created Env) are deleted, outside the
clock, so every request finds the node as described. The two nodes take turns, each with
the other disabled, and each number is the median of --rounds requests after --warm-up
unmeasured ones. The load average is printed: on a shared machine it moves both numbers.

Runs on SQLite (a temporary TT_VAR_DIR) and on PostgreSQL (a fresh database
tt_bench_ports_<pid> on 127.0.0.1:5432, dropped afterwards), each a subprocess of this
script (settings are read once at import), TT_DEBUG=0 as in production. No root, no
engine: the nodes are libvirt's test driver and no task runs.

    .venv/bin/python bench/port_alloc.py [--rounds 30] [--warm-up 5] [--only sqlite|postgres] [--quick]

(--quick: 10 rounds after 2 warm-up, for bench/all.py.)

    port_alloc: full <ms> ms, empty <ms> ms, ratio <x>

Targets: ratio <= 1.5, full <= 50 ms. One such line per database, PostgreSQL's last.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, Cleanup, arg_parser, p95

PG_SERVER = "postgres://postgres@127.0.0.1:5432"
PORT_MIN, PORT_MAX = 20000, 30031
USED = 10_000
HOG_VMS = 10
ASKED = 32
RATIO_TARGET = 1.5
FULL_TARGET_MS = 50.0


# --- the worker: one database ---------------------------------------------------------


def fill(node, template) -> None:
    """USED of the node's ports held by HOG_VMS VMs of another user, spread at random."""
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from envs.models import Env
    from vms.models import PortMapping, Vm

    hog = get_user_model().objects.create(username="hog", password="!")
    now = timezone.now()
    env = Env.objects.create(owner=hog, name="hog", start_at=now, end_at=now + timedelta(days=1))
    vms = Vm.objects.bulk_create(
        Vm(env=env, node=node, template=template, name=f"hog{i}", status=Vm.Status.RUNNING, cpu_num=1,
           mem_mb=64, disk_mb=20, mac=node.mac_for_index(2 + i), ip=node.ip_for_index(2 + i))
        for i in range(HOG_VMS)
    )
    ports = random.Random(22).sample(range(PORT_MIN, PORT_MAX + 1), USED)
    each = USED // HOG_VMS
    PortMapping.objects.bulk_create(
        (PortMapping(vm=vms[i // each], node=node, protocol="tcp", inner_port=1 + i % each, public_port=port)
         for i, port in enumerate(ports)),
        batch_size=1000,
    )


def worker(rounds: int, warm_up: int, out: Path) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ttportal.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from envs.models import Env
    from envs.services import env_create
    from nodes.models import Node
    from operations.models import Operation
    from vms.models import PortMapping, Vm, VmTemplate
    from vms.new_vms import NewVm
    from vms.services import vm_set_ports

    call_command("migrate", verbosity=0, interactive=False)
    template = VmTemplate.objects.create(name="tt/busybox", path="busybox.qcow2",
                                         compatible_engines=["libvirt"], size_mb=20, min_mem_mb=64)
    nodes = {
        name: Node.objects.create(name=f"ports-{name}", kind="libvirt", uri="test:///default",
                                  public_host=f"203.0.113.{40 + i}", vm_network=f"10.{140 + i}.0.0/16",
                                  port_min=PORT_MIN, port_max=PORT_MAX, notes="bench/port_alloc.py")
        for i, name in enumerate(("full", "empty"))
    }
    fill(nodes["full"], template)
    owner = get_user_model().objects.create(username="asker", password="!")
    ports = list(range(1, ASKED + 1))

    def only(node) -> None:
        Node.objects.filter(pk=node.pk).update(enabled=True)
        Node.objects.exclude(pk=node.pk).update(enabled=False)

    # The VM whose ports are set, one per node, without ports between two requests.
    vms = {}
    for name, node in nodes.items():
        only(node)
        op = env_create(owner=owner, by=owner, name=f"set-{name}",
                        vms=[NewVm(name="web", template=template.name, mem_mb=64)])
        vms[name] = Vm.objects.get(env_id=op.env_id)
        Vm.objects.filter(pk=vms[name].pk).update(status=Vm.Status.RUNNING)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")  # as autovacuum keeps a live database
    times: dict[str, dict[str, list[float]]] = {"set_ports": {"full": [], "empty": []},
                                                "env_create": {"full": [], "empty": []}}
    n = 0
    for i in range(warm_up + rounds):
        for name, node in nodes.items():
            only(node)
            vm = vms[name]
            started = time.perf_counter()
            op = vm_set_ports(vm=vm, ports=ports, by=owner)
            took = (time.perf_counter() - started) * 1000
            if vm.port_mappings.count() != ASKED:
                raise RuntimeError(f"{name}: {vm.port_mappings.count()} ports set, not {ASKED}")
            # The VM as it was, outside the clock.
            PortMapping.objects.filter(vm=vm).delete()
            Vm.objects.filter(pk=vm.pk).update(net_busy=False)
            Operation.objects.filter(pk=op.pk).delete()
            if i >= warm_up:
                times["set_ports"][name].append(took)

            n += 1
            started = time.perf_counter()
            op = env_create(owner=owner, by=owner, name=f"r{n}",
                            vms=[NewVm(name="web", template=template.name, mem_mb=64, ports=ports)])
            took = (time.perf_counter() - started) * 1000
            placed = PortMapping.objects.filter(vm__env_id=op.env_id, node=node).count()
            if placed != ASKED:
                raise RuntimeError(f"{name}: {placed} ports placed on {node.name}, not {ASKED}")
            Env.objects.filter(pk=op.env_id).delete()
            if i >= warm_up:
                times["env_create"][name].append(took)
    used = PortMapping.objects.filter(node=nodes["full"]).count()
    out.write_text(json.dumps({"vendor": connection.vendor, "times": times, "used": used,
                               "load": os.getloadavg()[0]}))


# --- the driver -----------------------------------------------------------------------


def pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def run_database(label: str, args: argparse.Namespace, cleanup: Cleanup) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"tt-port-alloc-{label}-"))
    cleanup.add(f"{label} temp dir", shutil.rmtree, tmp, ignore_errors=True)
    env = {**os.environ, "TT_VAR_DIR": str(tmp / "var"), "TT_DEBUG": "0", "TT_Q_SYNC": "0",
           "TT_SECRET_KEY": "port-alloc-bench-key", "TT_LOG_LEVEL": "ERROR", "TT_SSL_REDIRECT": "0",
           "TT_MAX_PORTS_PER_VM": str(ASKED), "TT_QUOTA_PORTS": str(ASKED)}
    for var in ("TT_DATABASE_URL", "TT_REDIS_URL", "TT_PLACEMENT"):
        env.pop(var, None)
    if label == "postgres":
        name = f"tt_bench_ports_{os.getpid()}"
        cleanup.add(f"database {name}", pg_admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        pg_admin(f"DROP DATABASE IF EXISTS {name}")
        pg_admin(f"CREATE DATABASE {name}")
        env["TT_DATABASE_URL"] = f"{PG_SERVER}/{name}"
    out = tmp / "result.json"
    subprocess.run([sys.executable, __file__, "--worker", "--rounds", str(args.rounds), "--warm-up",
                    str(args.warm_up), "--out", str(out)], env=env, cwd=ROOT, check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=None, help="timed requests per node (default 30)")
    parser.add_argument("--warm-up", type=int, default=None,
                        help="unmeasured requests per node first (default 5)")
    parser.add_argument("--quick", action="store_true", help="10 rounds after 2 warm-up (bench/all.py)")
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="one database only")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.rounds = args.rounds or (10 if args.quick else 30)
    args.warm_up = (2 if args.quick else 5) if args.warm_up is None else args.warm_up
    if args.worker:
        worker(args.rounds, args.warm_up, args.out)
        return
    print(f"port_alloc: one request for {ASKED} ports (vm_set_ports; env_create of such a VM beside it); "
          f"nodes of {PORT_MAX - PORT_MIN + 1:,} ports, the full one with {USED:,} used; median of "
          f"{args.rounds} after {args.warm_up} warm-up")
    with Cleanup() as cleanup:
        for label in ("sqlite", "postgres"):
            if args.only not in (None, label):
                continue
            result = run_database(label, args, cleanup)
            print(f"  {label}: {result['used']:,} ports used on the full node; load average "
                  f"{result['load']:.1f} on {os.cpu_count()} CPUs at the end")
            create_full, create_empty = (statistics.median(result["times"]["env_create"][name])
                                         for name in ("full", "empty"))
            print(f"  {label}: env_create of such a VM: median full {create_full:.1f} ms, empty "
                  f"{create_empty:.1f} ms, ratio {create_full / create_empty:.2f}")
            full, empty = result["times"]["set_ports"]["full"], result["times"]["set_ports"]["empty"]
            median_full, median_empty = statistics.median(full), statistics.median(empty)
            ratio = median_full / median_empty
            met = "met" if ratio <= RATIO_TARGET and median_full <= FULL_TARGET_MS else "MISSED"
            print(f"  {label}: setting the ports: p95 full {p95(full):.1f} ms, empty {p95(empty):.1f} ms; "
                  f"targets ratio <= {RATIO_TARGET}, full <= {FULL_TARGET_MS:.0f} ms: {met}")
            print(f"port_alloc: full {median_full:.1f} ms, empty {median_empty:.1f} ms, ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
