"""list_latency: how fast the list pages answer with a realistic amount of data.

100 users, 1,000 Envs, 10,000 VMs (direct rows made with bulk_create: Envs, VMs
with a unique MAC and IP per node, forwarded ports, snapshots, a few operations),
then p50/p95 latency and queries per request of:

- the portal's My Envs, as a user owning 10 Envs;
- the portal's Env page of an Env with 100 VMs;
- the API's VM list (default page size), as that user and as staff (every VM).

Each database is measured twice, with the full dataset and with one ten times
smaller, to show the number of queries does not grow with the rows. Target
(issue 24): p95 <= 25 ms for every page at 10,000 VMs (the full set), with as many
queries as in the small set.

Runs on SQLite (a temporary TT_VAR_DIR) and on PostgreSQL (a fresh database
tt_bench_<pid>_<scale> on 127.0.0.1:5432, named after this process, dropped
afterwards). Each run is a subprocess of this script, since the settings are read
once at import. Requests go through django.test.Client in-process (no HTTP server),
with TT_DEBUG=0 as in production. The load average is printed with each database:
on a shared machine it moves every figure.

    .venv/bin/python bench/list_latency.py [--requests 200] [--quick] [--only sqlite|postgres]
                                           [--sql] [--profile N]

The table's "cpu ms" is the median CPU time of this process per request (the Python
side: the database server's work on PostgreSQL is not in it); on a loaded machine it
moves far less than the latencies. Besides the table, one line per page and database,
and one per database for the queries:

    list_latency <database> <page>: p95 <ms> ms (target 25 ms): ok|MISSED
    list_latency <database> queries: <n/n/n/n> at 10,000 VMs, <n/n/n/n> at 1,000 (target the same): ok|MISSED

--quick: 50 timed requests per page (for bench/all.py). --profile N: after the timed
requests, N more of each page under cProfile, and the functions with the most time in
them (and of their own) printed, in ms per request.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
TARGET_MS = 25.0  # p95 of every page at 10,000 VMs (issue 24; it was 50 ms, issue 4)
QUICK_REQUESTS = 50

# The full dataset; "small" divides every count by ten.
USERS = 100
ENVS_PER_USER = 10
VMS = 10_000
BIG_ENV_VMS = 100
NODES = 10
PORTS_PER_VM = 2


# --- the worker: one database, one dataset size ------------------------------


def build(scale: int, nodes: list | None = None) -> dict:
    """Rows for USERS/scale users, ENVS_PER_USER Envs each, VMS/scale VMs, going round
    `nodes` (default: NODES nodes sharing one network). Returns who to ask as.
    bench/fleet.py builds the same rows over its own nodes."""
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from accounts.services import token_create
    from envs.kinds import EnvKind  # the project's modules once Django is set up (main())
    from envs.models import Env
    from nodes.models import Node
    from operations.models import Operation
    from vms.kinds import VmKind
    from vms.models import PortMapping, Snapshot, Vm, VmTemplate

    user_model = get_user_model()
    now = timezone.now()
    users = user_model.objects.bulk_create(
        [user_model(username=f"user{i:03d}", password="!") for i in range(USERS // scale)]
    )
    # Staff see every Env through the view permissions (ttportal.permissions), as an operator would.
    staff = user_model.objects.create(username="olga", password="!", is_staff=True)
    from django.contrib.auth.models import Permission

    staff.user_permissions.set(Permission.objects.filter(
        codename__in=("view_env", "view_vm", "view_snapshot", "view_operation")))
    if nodes is None:
        nodes = Node.objects.bulk_create([
            Node(name=f"bench-{i}", kind="libvirt", uri="test:///default", public_host=f"203.0.113.{i + 1}",
                 vm_network="10.100.0.0/16", port_min=20000, port_max=29999, notes="list_latency rows")
            for i in range(NODES)
        ])
    n_nodes = len(nodes)
    template = VmTemplate.objects.create(name="tt/busybox", path="busybox.qcow2",
                                         compatible_engines=["libvirt"], size_mb=20)

    envs = Env.objects.bulk_create([
        Env(owner=user, name=f"env-{j}", start_at=now - timedelta(hours=1 + j),
            end_at=now + timedelta(hours=2 + j), is_stopped=(j % 5 == 4), deny_outgoing=(j % 3 == 0))
        for user in users for j in range(ENVS_PER_USER)
    ])
    me, big_env = users[0], envs[0]

    # VMs: the big Env gets its 100 (10 in the small set), the rest go round the other Envs.
    big, total = BIG_ENV_VMS // scale, VMS // scale
    others = envs[1:]
    owners = [big_env] * big + [others[i % len(others)] for i in range(total - big)]
    per_env: dict[int, int] = {}
    vms, per_node = [], [0] * n_nodes
    statuses = [Vm.Status.RUNNING] * 6 + [Vm.Status.STOPPED] * 3 + [Vm.Status.ERROR]
    for i, env in enumerate(owners):
        n = i % n_nodes
        node = nodes[n]
        host = per_node[n] = per_node[n] + 1  # unique per node: MAC and IP from one counter
        k = per_env[env.id] = per_env.get(env.id, 0) + 1
        mac = node.mac_for_index(host + 1)  # host indexes start at 2 (.0 and the gateway .1 skipped)
        vms.append(Vm(
            env=env, node=node, template=template, name=f"vm{k}", status=statuses[i % len(statuses)],
            net_kind=Vm.NetKind.NAT, addr=node.public_host, runtime_image=f"tt-bench-{i}.qcow2",
            cpu_num=1, mem_mb=256, disk_mb=1024, mac=mac, ip=node.ip_for_mac(mac),
            net_blacklist=["192.0.2.1"] if i % 7 == 0 else [], created_at=now,
        ))
    vms = Vm.objects.bulk_create(vms, batch_size=2000)

    ports, next_port = [], [node.port_min for node in nodes]
    for i, vm in enumerate(vms):
        n = i % n_nodes
        for inner in (22, 80)[:PORTS_PER_VM]:
            ports.append(PortMapping(vm=vm, node=nodes[n], protocol="tcp", inner_port=inner,
                                     public_port=next_port[n]))
            next_port[n] += 1
    PortMapping.objects.bulk_create(ports, batch_size=5000)
    # Two snapshots on every fifth VM.
    Snapshot.objects.bulk_create([
        Snapshot(vm=vm, name=f"snap{s}", status=Snapshot.Status.READY, path=f"snap{s}", created_at=now)
        for vm in vms[::5] for s in range(2)
    ], batch_size=5000)

    # A finished env_create per Env, a few more on the big Env, and one still running elsewhere.
    ops = [Operation(kind=EnvKind.ENV_CREATE, status=Operation.Status.SUCCEEDED, env=env,
                     target=env.name, requested_by_id=env.owner_id, progress=100,
                     log="allocating\ncreating VMs\ndone", created_at=env.start_at)
           for env in envs]
    ops += [Operation(kind=VmKind.VM_START, status=Operation.Status.SUCCEEDED, env=big_env,
                      target=f"{big_env.name}/vm{i + 1}", requested_by=me, progress=100, log="started")
            for i in range(30)]
    ops.append(Operation(kind=EnvKind.ENV_STOP, status=Operation.Status.RUNNING, env=envs[1],
                         target=envs[1].name, requested_by=me, progress=40, log="stopping vm1"))
    Operation.objects.bulk_create(ops, batch_size=2000)

    _, user_token = token_create(user=me, name="list-latency")
    _, staff_token = token_create(user=staff, name="list-latency")
    return {
        "me": me.pk, "staff": staff.pk, "big_env": big_env.pk, "user_token": user_token,
        "staff_token": staff_token,
        "counts": {"users": user_model.objects.count(), "envs": Env.objects.count(),
                   "vms": Vm.objects.count(), "ports": PortMapping.objects.count(),
                   "operations": Operation.objects.count()},
        "rows": {"my_envs": Env.objects.filter(owner=me).count(), "env_vms": big,
                 "my_vms": Vm.objects.filter(env__owner=me).count(), "all_vms": total},
    }


def pages(data: dict) -> list[tuple]:
    """(name, rows shown, client, path, headers) of each page measured, for what `build` returned."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    users = get_user_model().objects
    portal, api, staff_api = Client(), Client(), Client()
    portal.force_login(users.get(pk=data["me"]))
    token = {"HTTP_AUTHORIZATION": f"Token {data['user_token']}"}
    staff_token = {"HTTP_AUTHORIZATION": f"Token {data['staff_token']}"}
    rows = data["rows"]
    return [
        ("My Envs (portal)", rows["my_envs"], portal, reverse("envs:list"), {}),
        ("Env page, big Env (portal)", rows["env_vms"], portal,
         reverse("envs:detail", args=[data["big_env"]]), {}),
        ("API VM list (user)", rows["my_vms"], api, reverse("api:vm-list"), token),
        ("API VM list (staff)", rows["all_vms"], staff_api, reverse("api:vm-list"), staff_token),
    ]


def measure(client, path: str, requests: int, headers: dict, profiled: int = 0) -> dict:
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    for _ in range(10):  # warm-up: template cache, connection, query plans
        response = client.get(path, **headers)
        assert response.status_code == 200, (path, response.status_code, response.content[:300])
    with CaptureQueriesContext(connection) as captured:
        client.get(path, **headers)
    queries = [q["sql"] for q in captured.captured_queries]
    reset_queries()
    times, cpu = [], []
    for _ in range(requests):
        start, start_cpu = time.perf_counter(), time.process_time()
        response = client.get(path, **headers)
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
        assert response.status_code == 200
    times.sort()
    return {
        "p50": statistics.median(times), "cpu": statistics.median(cpu),
        "p95": times[min(len(times) - 1, round(0.95 * len(times)) - 1)],
        "queries": len(queries), "sql": queries,
        "profile": profile(client, path, profiled, headers) if profiled else "",
    }


def profile(client, path: str, requests: int, headers: dict) -> str:
    """Where `requests` more requests spend their time, under cProfile: the functions
    with the most time in them (what they call included), leaving out the layers every
    request runs through (those taking 90% of it or more), then those with the most time
    of their own. Milliseconds per request."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        client.get(path, **headers)
    profiler.disable()
    entries = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, ncalls, own, cumulative, callers)
    total = sum(own for _, _, own, _, _ in entries.values())

    def name(key) -> str:
        file, line, function = key
        file = file.replace(str(ROOT) + "/", "").replace(sys.prefix + "/", "")
        return f"{re.sub(r'^.*site-packages/', '', file)}:{line}({function})"

    def table(title: str, rows) -> list[str]:
        lines = [f"  {title}: {'cum ms':>7} {'own ms':>7} {'calls':>7}  function (per request)"]
        lines += [f"  {'':{len(title)}}  {cum / requests * 1000:>7.2f} {own / requests * 1000:>7.2f} "
                  f"{calls / requests:>7.1f}  {name(key)}" for key, (_, calls, own, cum, _) in rows]
        return lines

    inner = [item for item in entries.items() if item[1][3] < 0.9 * total]
    by_cum = sorted(inner, key=lambda item: -item[1][3])[:15]
    by_own = sorted(entries.items(), key=lambda item: -item[1][2])[:10]
    return "\n".join([f"  {total / requests * 1000:.1f} ms per request under the profiler",
                      *table("cumulative", by_cum), *table("own time  ", by_own)])


def worker(scale: int, requests: int, out: Path, profiled: int = 0) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ttportal.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0, interactive=False)
    # TT_DEBUG=0 serves only collected static files (the manifest), as `./tt.sh run --production`.
    call_command("collectstatic", interactive=False, verbosity=0)
    # The server's start-up (after collectstatic: WhiteNoise reads STATIC_ROOT then), which
    # freezes what it loaded (gc.freeze).
    import ttportal.wsgi  # noqa: F401

    started = time.perf_counter()
    data = build(scale)
    built = time.perf_counter() - started
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # fresh statistics, as autovacuum would give a live database

    results = []
    for name, nrows, client, path, headers in pages(data):
        results.append({"page": name, "rows": nrows,
                        **measure(client, path, requests, headers, profiled if scale == 1 else 0)})
    out.write_text(json.dumps({"vendor": connection.vendor, "scale": scale, "counts": data["counts"],
                               "build_s": built, "results": results, "load": os.getloadavg()[0]}))


# --- the driver ---------------------------------------------------------------


def run_worker(label: str, env: dict, scale: int, requests: int, tmp: Path, profiled: int) -> dict:
    out = tmp / f"result-{label}-{scale}.json"
    subprocess.run(
        [sys.executable, __file__, "--worker", "--scale", str(scale), "--requests", str(requests),
         "--profile", str(profiled), "--out", str(out)],
        env=env, cwd=ROOT, check=True,
    )
    return json.loads(out.read_text())


def pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def run_database(label: str, requests: int, verbose: bool, profiled: int = 0) -> list[dict]:
    tmp = Path(tempfile.mkdtemp(prefix=f"tt-list-latency-{label}-"))
    db_names = []
    try:
        runs = []
        for scale in (1, 10):
            env = {**os.environ, "TT_VAR_DIR": str(tmp / f"var-{scale}"), "TT_DEBUG": "0",
                   "TT_SECRET_KEY": "list-latency-bench-key", "TT_LOG_LEVEL": "WARNING",
                   "TT_SSL_REDIRECT": "0"}  # plain-HTTP requests, as a proxy that redirects itself forwards
            env.pop("TT_DATABASE_URL", None)
            env.pop("TT_REDIS_URL", None)
            if label == "postgres":
                name = f"tt_bench_{os.getpid()}_{scale}"
                pg_admin(f"DROP DATABASE IF EXISTS {name}")
                db_names.append(name)
                pg_admin(f"CREATE DATABASE {name}")
                env["TT_DATABASE_URL"] = f"{PG_SERVER}/{name}"
            runs.append(run_worker(label, env, scale, requests, tmp, profiled))
        print_table(label, runs, verbose)
        return runs
    finally:
        for name in db_names:
            try:
                pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            except Exception as exc:  # clean-up must go on
                print(f"warning: could not drop {name}: {exc}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


def page_ok(big: dict, little: dict) -> bool:
    """The full set's p95 within the target, and no more queries than with a tenth of the rows."""
    return big["p95"] <= TARGET_MS and big["queries"] == little["queries"]


def print_table(label: str, runs: list[dict], verbose: bool) -> None:
    full, small = runs
    c = full["counts"]
    print(f"\n== {label} ({full['vendor']}): {c['users']} users, {c['envs']} Envs, {c['vms']} VMs, "
          f"{c['ports']} ports, {c['operations']} operations (built in {full['build_s']:.1f} s); "
          f"small set: {small['counts']['envs']} Envs, {small['counts']['vms']} VMs; "
          f"load average {full['load']:.1f} on {os.cpu_count()} CPUs")
    head = f"{'page':<30} {'rows':>6} {'p50 ms':>8} {'p95 ms':>8} {'cpu ms':>7} {'queries':>8}   " \
           f"{'rows/10':>7} {'p50 ms':>8} {'p95 ms':>8} {'queries':>8}  target"
    print(head)
    print("-" * len(head))
    for big, little in zip(full["results"], small["results"], strict=True):
        print(f"{big['page']:<30} {big['rows']:>6} {big['p50']:>8.1f} {big['p95']:>8.1f} {big['cpu']:>7.1f} "
              f"{big['queries']:>8}   "
              f"{little['rows']:>7} {little['p50']:>8.1f} {little['p95']:>8.1f} {little['queries']:>8}  "
              f"{'ok' if page_ok(big, little) else 'MISSED'}")
        if verbose:
            for sql in big["sql"]:
                print(f"    {sql[:200]}")
    for big in full["results"]:
        if big.get("profile"):
            print(f"\n-- profile of {big['page']} ({label}):\n{big['profile']}")
    for big in full["results"]:
        print(f"list_latency {label} {big['page']}: p95 {big['p95']:.1f} ms (target {TARGET_MS:.0f} ms): "
              f"{'ok' if big['p95'] <= TARGET_MS else 'MISSED'}")
    big, little = ("/".join(str(page["queries"]) for page in run["results"]) for run in runs)
    print(f"list_latency {label} queries: {big} at {c['vms']:,} VMs, {little} at "
          f"{small['counts']['vms']:,} (target the same): {'ok' if big == little else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, help="timed requests per page (default 200; --quick: "
                        f"{QUICK_REQUESTS})")
    parser.add_argument("--quick", action="store_true", help="fewer timed requests (bench/all.py)")
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="one database only")
    parser.add_argument("--sql", action="store_true", help="print each page's queries")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="profile N more requests of each page (full set) and print the top entries")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    requests = args.requests or (QUICK_REQUESTS if args.quick else 200)
    if args.worker:
        worker(args.scale, requests, args.out, args.profile)
        return
    print(f"list_latency: {requests} timed requests per page after 10 warm-up ones; "
          f"target p95 <= {TARGET_MS:.0f} ms at 10,000 VMs, queries independent of the rows")
    missed = False
    for label in ("sqlite", "postgres"):
        if args.only in (None, label):
            full, small = run_database(label, requests, args.sql, args.profile)
            for big, little in zip(full["results"], small["results"], strict=True):
                missed |= not page_ok(big, little)
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
