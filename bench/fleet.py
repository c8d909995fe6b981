"""fleet: placement and the list pages with 10 and with 100 nodes, heartbeats flowing.

Each fleet size gets list_latency's dataset (100 users, 1,000 Envs, 10,000 live VMs
as direct rows, bulk_create), spread round the nodes. Every node is libvirt's
test:///default driver (nothing is booted, nothing on the host is touched) with its
own /16 (10.100.0.0/16 onwards), ports 20000-29999 and capacities just above what its
VMs use, and the nodes differ the same way at both sizes (by index):

- i % 10 == 0: served by the site's cluster (own_cluster off); the rest have a cluster
  of their own, so their heartbeat must be fresh for the `up` filter to pass them;
- i % 10 == 7: no vCPU free; i % 10 == 8: less memory free than a VM asks;
- i % 20 == 3: drained; i % 50 == 5: down (down_since set, its last beat 11 min ago);
- i % 50 == 9: late (own cluster, last beat 10 min ago, not marked down yet: the first
  sweep marks it down).

So at 10 nodes 5 nodes can take a VM, at 100 nodes 71, and every filter removes some.

Heartbeats flow while everything is measured: vms.heartbeat.write_heartbeat(node) for every node that
beats (all but the down and the late ones), as their clusters would, each node every
--beat seconds (TT_NODE_BEAT's 10 s by default) spread evenly over the interval, so 100
nodes beat ten times as often as 10; after each round nodes.fleet.mark_late_nodes_down(), as the site's
cluster runs it. The beats run in a process of their own by default (this script with
--beater; a thread there, its own database connection, closed at the end): node clusters
beat from other hosts, so they share the database with the portal, not its interpreter.
`--beats-in thread` runs them in a thread of the measuring process instead (its own
connection too), which adds GIL contention real clusters do not cause: in a trial on
SQLite at 100 nodes a beat took 219 ms (p50) instead of 71 and the thread managed 3.0
beats/s instead of 5.9, the lists about the same. Either way the beats share this
machine's CPUs (2 here) with the portal and the database, as beats share a real database
server's. `--beat 0`: no beats, to see what they cost.

On SQLite a beat's write waits while a placement's transaction holds the write lock,
and a placement waits for a beat's: SQLite runs one writer at a time (BEGIN IMMEDIATE,
30 s busy timeout), and a waiting writer polls with back-off, so back-to-back placements
can hold a beat off for seconds. That is what SQLite costs, so it is measured as it is;
a fleet of nodes with clusters of their own runs on PostgreSQL anyway.

What is measured, in this order, at each size (each in its own fresh database):

- the lists, as bench/list_latency.py measures them (same pages, same clients, 10
  warm-up requests, then --requests timed ones): My Envs, the Env page of an Env of
  100 VMs (at 100 nodes: one VM on each node), the API's VM list as a user and as staff;
- a lock probe: inside a transaction that holds placement's lock (Placer.nodes(): every
  Node row SELECT ... FOR UPDATE), the beater is asked for one beat; on PostgreSQL
  it must finish before the transaction ends (beats write NodeHeartbeat only), on SQLite
  it waits for the commit;
- placement per Env: envs.services.env_create of an Env of 3 VMs (1 vCPU, 256 MiB, port
  22 each) by a user, timed from the call to its return: quota check under the owner's
  lock, placement (node lock, use read), the rows (Env, VMs with address and port,
  operation) and, on commit, the dispatch to the node's queue on django-q2's ORM broker
  (TT_Q_SYNC=0: nothing runs inline, and no cluster takes the tasks). 5 untimed, then
  --envs timed;
- pure placement: Placer().place(...) of the same 3 VMs in transaction.atomic() (lock,
  use read, filters, weigher; nothing written), --envs times;
- the beats themselves (their duration, how many per second the beater managed, the sweeps).

Queries per request are counted at both sizes; "queries constant" means each list page,
env_create, the pure placement and a beat made as many queries at 100 nodes as at 10 (for
env_create and beats, the most common count; a note says when counts varied). Targets
(issue 24, item 4; issue 13's were 20 and 50 ms): placement <= 10 ms p95 per Env at 100
nodes, lists p95 <= 25 ms, queries constant in the number of nodes. The final line's
placement is the pure placement of an Env's 3 VMs (what chooses their nodes);
env_create's whole database work is printed beside it.

Runs on SQLite (a temporary TT_VAR_DIR) and on PostgreSQL (a fresh database
tt_bench_<pid>_<nodes> on 127.0.0.1:5432, dropped afterwards), each size a subprocess of
this script (settings are read once at import), TT_DEBUG=0 as in production. The last
line is PostgreSQL's when it ran, else SQLite's (the line before it says which):

    .venv/bin/python bench/fleet.py [--requests 100] [--envs 50] [--beat 10] [--beats-in thread]
                                    [--only sqlite|postgres] [--quick]

(--quick: at most 30 requests per page and 20 placements, for bench/all.py.)

    fleet: placement p95 <ms> ms at 100 nodes, list p95 <ms> ms, queries constant: yes|no
           (targets: placement <= 10 ms met|MISSED, list <= 25 ms met|MISSED)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import list_latency
from _common import ROOT, Cleanup, arg_parser, p95

SIZES = (10, 100)
PLACEMENT_TARGET_MS = 10.0
LIST_TARGET_MS = 25.0
VMS_PER_ENV = 3
WARM_UP_ENVS = 5
PROBE_WAIT_S = 2.0


def role(i: int) -> str:
    """What node i is: see the module's docstring."""
    if i % 50 == 5:
        return "down"
    if i % 50 == 9:
        return "late"
    if i % 20 == 3:
        return "drained"
    if i % 10 == 7:
        return "cpu full"
    if i % 10 == 8:
        return "memory full"
    return "site" if i % 10 == 0 else "up"


# --- the worker: one database, one fleet size -------------------------------------


def make_nodes(count: int) -> list:
    from datetime import timedelta

    from django.utils import timezone

    from nodes.models import Node, NodeHeartbeat

    long_ago = timezone.now() - timedelta(minutes=10)
    nodes = Node.objects.bulk_create([
        Node(name=f"fleet-{i:03d}", kind="libvirt", uri="test:///default", public_host=f"203.0.113.{i + 1}",
             vm_network=f"10.{100 + i}.0.0/16", port_min=20000, port_max=29999,
             own_cluster=role(i) != "site", drained=role(i) == "drained",
             down_since=long_ago if role(i) == "down" else None, notes="bench/fleet.py rows")
        for i in range(count)
    ])
    # The down and the late nodes beat last long ago; the others beat before measuring.
    NodeHeartbeat.objects.bulk_create([
        NodeHeartbeat(node=node, beat_at=long_ago - timedelta(minutes=1 if role(i) == "down" else 0),
                      worker="bench", ports_free=0, addresses_free=0, vms_running=0)
        for i, node in enumerate(nodes) if role(i) in ("down", "late")
    ])
    return nodes


def set_capacities(nodes: list) -> None:
    """Capacities just above each node's use (a few nodes full), so the filters weigh."""
    from django.db.models import Count, Sum

    from nodes.models import Node
    from vms.models import Vm, live_vms

    used = {row["node"]: row for row in Vm.objects.filter(live_vms("")).values("node").annotate(
        n=Count("id"), cpu=Sum("cpu_num"), mem=Sum("mem_mb")).order_by()}
    for i, node in enumerate(nodes):
        use = used.get(node.pk, {"cpu": 0, "mem": 0})
        node.cpu_capacity = use["cpu"] + (0 if role(i) == "cpu full" else 200)
        node.mem_capacity_mb = use["mem"] + (128 if role(i) == "memory full" else (32 + i * 7 % 10) * 1024)
    Node.objects.bulk_update(nodes, ["cpu_capacity", "mem_capacity_mb"])


class Beater(threading.Thread):
    """Beats for the nodes `node_ids` (each every `interval` s, spread evenly), a sweep after
    each round; one beat at once when probed. Its own database connection, closed when it
    stops. Times are time.monotonic(), comparable across processes."""

    def __init__(self, node_ids: list[int], interval: float):
        super().__init__(name="beats", daemon=True)
        self.node_ids, self.interval = node_ids, interval
        self.stopping = threading.Event()
        self.probes: queue.Queue = queue.Queue()
        self.probed: queue.Queue = queue.Queue()
        self.times: list[float] = []
        self.queries: Counter = Counter()
        self.sweeps: list[float] = []
        self.marked_down: list[str] = []
        self.error: BaseException | None = None
        self.started_at = self.stopped_at = 0.0

    def run(self) -> None:
        from django.db import connections

        from nodes.fleet import mark_late_nodes_down
        from nodes.models import Node

        try:
            nodes = list(Node.objects.filter(pk__in=self.node_ids).order_by("name"))
            step = self.interval / max(1, len(nodes))
            self.started_at = due = time.monotonic()
            while not self.stopping.is_set():
                for node in nodes:
                    self._wait(due)
                    if self.stopping.is_set():
                        break
                    self._beat(node)
                    due = max(due + step, time.monotonic() - self.interval)  # never catch up a backlog
                else:
                    start = time.monotonic()
                    self.marked_down += mark_late_nodes_down().marked_down
                    self.sweeps.append((time.monotonic() - start) * 1000)
        except BaseException as exc:  # told by stop()
            self.error = exc
        finally:
            self.stopped_at = time.monotonic()
            connections.close_all()

    def _beat(self, node, *, counted: bool = True) -> float:
        """One beat (counted in the figures unless it is a probe's); when it ended."""
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from vms.heartbeat import write_heartbeat

        with CaptureQueriesContext(connection) as captured:
            start = time.monotonic()
            write_heartbeat(node)
            done = time.monotonic()
        if counted:
            self.times.append((done - start) * 1000)
            self.queries[len(captured.captured_queries)] += 1
        return done

    def _wait(self, due: float) -> None:
        """Sleep until `due`, answering probes meanwhile (a probe beats for the first node)."""
        from nodes.models import Node

        while not self.stopping.is_set():
            left = due - time.monotonic()
            try:
                self.probes.get(timeout=max(0.0, min(left, 0.5)))
            except queue.Empty:
                if left <= 0:
                    return
                continue
            self.probed.put(self._beat(Node.objects.get(pk=self.node_ids[0]), counted=False))

    def probe(self) -> None:
        self.probes.put(None)

    def probed_at(self, timeout: float) -> float | None:
        """When the probe's beat ended, or None if it has not within `timeout` s."""
        try:
            return self.probed.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> dict:
        """Stops, and returns what the beats took (raises if the thread failed)."""
        self.stopping.set()
        self.join(timeout=60)
        if self.error is not None:
            raise RuntimeError(f"the beats failed: {self.error!r}") from self.error
        seconds = max(1e-9, (self.stopped_at or time.monotonic()) - self.started_at)
        return {**stats(self.times), "per_s": len(self.times) / seconds,
                "queries": self.queries.most_common(1)[0][0] if self.queries else 0,
                "query_counts": sorted(self.queries), "sweeps": len(self.sweeps),
                "sweep_p95": p95(self.sweeps) if self.sweeps else 0.0, "marked_down": self.marked_down}


class BeaterProcess:
    """A Beater in a process of its own (this script with --beater), as node clusters on
    other hosts beat: only the CPU is shared with the measuring process, not its GIL.
    Talks over its stdin/stdout: `probe` -> `probed <time>`, `stop` -> the JSON summary."""

    def __init__(self, node_ids: list[int], interval: float):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--beater", "--beat", str(interval),
             "--ids", ",".join(map(str, node_ids))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, name="beater-output", daemon=True).start()
        if self._line(120) != "ready":
            self.close()
            raise RuntimeError("the beat process did not start")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("")  # it ended

    def _line(self, timeout: float) -> str | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def _send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def probe(self) -> None:
        self._send("probe")

    def probed_at(self, timeout: float) -> float | None:
        line = self._line(timeout)
        if line is None:
            return None
        if not line.startswith("probed "):
            raise RuntimeError(f"the beat process said {line!r} to a probe")
        return float(line.split()[1])

    def stop(self) -> dict:
        try:
            self._send("stop")
            line = self._line(60) or "{}"
            result = json.loads(line)
            if "error" in result or not result:
                raise RuntimeError(f"the beats failed: {result.get('error', 'no answer')}")
            return result
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def beater_main(node_ids: list[int], interval: float) -> None:
    """The beat process: a Beater, driven over stdin (which ends when the worker does)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ttportal.settings")
    import django

    django.setup()
    beater = Beater(node_ids, interval)
    beater.start()
    told = False  # to stop; else the worker is gone (its end closed our stdin): stop quietly
    with contextlib.suppress(BrokenPipeError):
        print("ready", flush=True)
        for line in sys.stdin:
            if line.strip() == "probe":
                beater.probe()
                print(f"probed {beater.probed_at(120)}", flush=True)
            elif line.strip() == "stop":
                told = True
                break
    try:
        result = beater.stop()
    except Exception as exc:
        result = {"error": repr(exc)}
    if told:
        print(json.dumps(result), flush=True)


def stats(times: list[float]) -> dict:
    if not times:
        return {"n": 0, "p50": 0.0, "p95": 0.0, "max": 0.0}
    return {"n": len(times), "p50": statistics.median(times), "p95": p95(times), "max": max(times)}


def lock_probe(beater) -> dict:
    """Ask for a beat while holding placement's lock on every Node row."""
    from django.db import transaction

    from vms.placement import Placer

    with transaction.atomic():
        Placer().nodes()
        asked = time.monotonic()
        beater.probe()
        done = beater.probed_at(PROBE_WAIT_S)
        released = time.monotonic()
    if done is None:
        done = beater.probed_at(120)
    return {"while_locked": done < released, "beat_ms": (done - asked) * 1000,
            "held_ms": (released - asked) * 1000}


def place_envs(owner, template, count: int, warm_up: int) -> dict:
    """env_create of an Env of VMS_PER_ENV VMs, timed and its queries counted."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from envs.services import env_create
    from vms.new_vms import NewVm

    times, counts, nodes = [], Counter(), Counter()
    for k in range(warm_up + count):
        vms = [NewVm(name=f"vm{j}", template=template, ports=[22]) for j in range(VMS_PER_ENV)]
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            op = env_create(owner=owner, by=owner, name=f"fleet-{k}", vms=vms)
            took = (time.perf_counter() - start) * 1000
        if k >= warm_up:
            times.append(took)
            counts[len(captured.captured_queries)] += 1
            nodes.update(op.env.vms.values_list("node__name", flat=True))
    return {**stats(times), "queries": counts.most_common(1)[0][0], "query_counts": sorted(counts),
            "nodes_used": len(nodes)}


def place_pure(template, count: int) -> dict:
    """Placer().place of the same VMs in a transaction (lock, use read, filters, weigher)."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from vms.models import Vm
    from vms.new_vms import wanted_features
    from vms.placement import Ask, Placer

    wanted = wanted_features(Vm.NetKind.NAT, rand_uuid=True, keep_image=False, disk_mb=None,
                             template=template)
    ask = Ask.of(template, 1, 256, wanted, [("tcp", 22)])
    times, counts = [], Counter()
    for k in range(WARM_UP_ENVS + count):
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            with transaction.atomic():
                placer = Placer()
                for _ in range(VMS_PER_ENV):
                    placer.place(ask, "template")
            took = (time.perf_counter() - start) * 1000
        if k >= WARM_UP_ENVS:
            times.append(took)
            counts[len(captured.captured_queries)] += 1
    return {**stats(times), "queries": counts.most_common(1)[0][0], "query_counts": sorted(counts)}


def worker(count: int, requests: int, envs: int, beat_every: float, beats_in: str, out: Path) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ttportal.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from vms.heartbeat import write_heartbeat
    from vms.models import VmTemplate

    call_command("migrate", verbosity=0, interactive=False)
    # TT_DEBUG=0 serves only collected static files (the manifest), as `./tt.sh run --production`.
    call_command("collectstatic", interactive=False, verbosity=0)
    # The server's start-up (after collectstatic: WhiteNoise reads STATIC_ROOT then), which
    # freezes what it loaded (gc.freeze).
    import ttportal.wsgi  # noqa: F401

    started = time.perf_counter()
    nodes = make_nodes(count)
    data = list_latency.build(1, nodes=nodes)
    set_capacities(nodes)
    beating = [node for i, node in enumerate(nodes) if role(i) not in ("down", "late")]
    for node in beating:  # the first beats, before anything is measured
        write_heartbeat(node)
    owner = get_user_model().objects.create(username="placer", password="!")
    template = VmTemplate.objects.get(name="tt/busybox")
    built = time.perf_counter() - started
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # Fresh statistics and visibility map, as autovacuum keeps a live database (it
            # vacuums a table once a fifth of it changed): index-only scans need the latter.
            cursor.execute("VACUUM ANALYZE")

    beater, beats, probe = None, None, None
    if beat_every > 0:
        ids = [node.pk for node in beating]
        if beats_in == "thread":
            beater = Beater(ids, beat_every)
            beater.start()
        else:
            beater = BeaterProcess(ids, beat_every)
    try:
        lists = [{"page": name, "rows": nrows, **list_latency.measure(client, path, requests, headers)}
                 for name, nrows, client, path, headers in list_latency.pages(data)]
        probe = lock_probe(beater) if beater else None
        create = place_envs(owner, template, envs, WARM_UP_ENVS)
        pure = place_pure(template, envs)
    finally:
        if beater:
            beats = beater.stop()
    out.write_text(json.dumps({
        "vendor": connection.vendor, "nodes": count, "counts": data["counts"], "build_s": built,
        "roles": Counter(role(i) for i in range(count)), "lists": lists, "probe": probe,
        "create": create, "pure": pure, "beats": beats,
    }))


# --- the driver -----------------------------------------------------------------------


def run_database(label: str, args: argparse.Namespace, cleanup: Cleanup) -> list[dict]:
    tmp = Path(tempfile.mkdtemp(prefix=f"tt-fleet-{label}-"))
    cleanup.add(f"{label} temp dir", shutil.rmtree, tmp, ignore_errors=True)
    runs = []
    for count in SIZES:
        env = {**os.environ, "TT_VAR_DIR": str(tmp / f"var-{count}"), "TT_DEBUG": "0", "TT_Q_SYNC": "0",
               "TT_SECRET_KEY": "fleet-bench-key", "TT_LOG_LEVEL": "ERROR",
               "TT_SSL_REDIRECT": "0"}  # as list_latency: plain-HTTP requests, no redirect to HTTPS
        # The placing user makes more Envs than a default quota allows: not what is measured.
        for quota in ("ENVS", "VMS", "VCPUS", "MEM_MB", "DISK_MB", "SNAPSHOTS", "PORTS"):
            env[f"TT_QUOTA_{quota}"] = str(10**9)
        env["TT_MAX_QUEUED_OPERATIONS_PER_USER"] = "0"  # its creates queue tasks no worker runs
        for var in ("TT_DATABASE_URL", "TT_REDIS_URL", "TT_PLACEMENT"):
            env.pop(var, None)
        if label == "postgres":
            name = f"tt_bench_{os.getpid()}_{count}"
            drop = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            cleanup.add(f"database {name}", list_latency.pg_admin, drop)
            list_latency.pg_admin(f"DROP DATABASE IF EXISTS {name}")
            list_latency.pg_admin(f"CREATE DATABASE {name}")
            env["TT_DATABASE_URL"] = f"{list_latency.PG_SERVER}/{name}"
        out = tmp / f"result-{count}.json"
        subprocess.run(
            [sys.executable, __file__, "--worker", "--nodes", str(count), "--requests", str(args.requests),
             "--envs", str(args.envs), "--beat", str(args.beat), "--beats-in", args.beats_in,
             "--out", str(out)],
            env=env, cwd=ROOT, check=True,
        )
        runs.append(json.loads(out.read_text()))
    return runs


def met(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


def growth(small: float, big: float) -> str:
    return f"x{big / small:.2f}" if small else "-"


def print_table(label: str, runs: list[dict]) -> dict:
    """The table of one database; returns its figures for the last line."""
    small, big = runs
    c = big["counts"]
    print(f"\n== {label} ({big['vendor']}): {c['users']} users, {c['envs']} Envs, {c['vms']} VMs, "
          f"{c['ports']} ports at both sizes (built in {small['build_s']:.1f} / {big['build_s']:.1f} s)")
    for run in runs:
        roles = ", ".join(f"{n} {r}" for r, n in sorted(run["roles"].items()))
        print(f"   {run['nodes']} nodes: {roles}; Envs placed on {run['create']['nodes_used']} nodes")
    head = (f"{'figure':<34} {'10 nodes p50/p95 ms':>20} {'100 nodes p50/p95 ms':>21} {'p95 growth':>10} "
            f"{'queries 10/100':>15}")
    print(head)
    print("-" * len(head))
    rows = [(r["page"], r, b) for r, b in zip(small["lists"], big["lists"], strict=True)]
    rows += [(f"env_create, {VMS_PER_ENV} VMs (per Env)", small["create"], big["create"]),
             (f"Placer.place x{VMS_PER_ENV} in a transaction", small["pure"], big["pure"])]
    if small["beats"] and big["beats"]:
        rows.append(("write_heartbeat(node)", small["beats"], big["beats"]))
    constant = True
    for name, a, b in rows:
        same = a["queries"] == b["queries"]
        constant &= same
        print(f"{name:<34} {a['p50']:>9.1f} /{a['p95']:>8.1f} {b['p50']:>10.1f} /{b['p95']:>8.1f} "
              f"{growth(a['p95'], b['p95']):>10} {a['queries']:>7} / {b['queries']:<5}"
              f"{'' if same else '  GROWS'}")
    for run in runs:
        for key in ("create", "pure", "beats"):
            if run[key] and len(run[key]["query_counts"]) > 1:
                print(f"   note: {key} at {run['nodes']} nodes made {run[key]['query_counts']} queries "
                      f"(most often {run[key]['queries']})")
    for run in runs:
        b, p = run["beats"], run["probe"]
        if b:
            print(f"   {run['nodes']} nodes: {b['n']} beats ({b['per_s']:.1f}/s, max {b['max']:.1f} ms, "
                  f"{b['queries']} queries), {b['sweeps']} sweeps (p95 {b['sweep_p95']:.1f} ms, marked down: "
                  f"{', '.join(b['marked_down']) or 'none'})")
        if p:
            how = ("finished while placement held the node lock" if p["while_locked"] else
                   f"waited until placement's transaction ended ({p['held_ms']:.0f} ms)")
            print(f"   {run['nodes']} nodes: lock probe: a beat took {p['beat_ms']:.1f} ms and {how}")
    # Placement is choosing the nodes of an Env's VMs (lock, use, filters, weigher); the
    # whole create (quota, rows, addresses, ports, operation, dispatch) is shown above it.
    place_p95 = big["pure"]["p95"]
    list_p95 = max(r["p95"] for r in big["lists"])
    print(f"   env_create p95 {big['create']['p95']:.1f} ms at 100 nodes (the whole request's database work)")
    print(f"   placement p95 {place_p95:.1f} ms at 100 nodes (target <= {PLACEMENT_TARGET_MS:.0f}: "
          f"{met(place_p95, PLACEMENT_TARGET_MS)}), list p95 {list_p95:.1f} ms "
          f"(target <= {LIST_TARGET_MS:.0f}: {met(list_p95, LIST_TARGET_MS)}), "
          f"queries constant: {'yes' if constant else 'no'}")
    return {"place": place_p95, "list": list_p95, "constant": constant}


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--requests", type=int, default=100, help="timed requests per page (default 100)")
    parser.add_argument("--envs", type=int, default=50, help="placements timed (default 50)")
    parser.add_argument("--beat", type=float, default=10.0,
                        help="seconds between two beats of a node (default 10, as TT_NODE_BEAT; 0: no beats)")
    parser.add_argument("--beats-in", choices=["process", "thread"], default="process",
                        help="where the beats run: a process of their own (default) or a thread of the "
                        "measuring process")
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="one database only")
    parser.add_argument("--quick", action="store_true",
                        help="at most 30 requests per page and 20 placements (bench/all.py)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--beater", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--nodes", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--ids", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.requests, args.envs = min(args.requests, 30), min(args.envs, 20)
    if args.worker:
        worker(args.nodes, args.requests, args.envs, args.beat, args.beats_in, args.out)
        return
    if args.beater:
        beater_main([int(i) for i in args.ids.split(",") if i], args.beat)
        return
    beats = (f"each node beating every {args.beat:g} s (from a {args.beats_in})" if args.beat > 0
             else "no beats")
    print(f"fleet: {' and '.join(map(str, SIZES))} nodes, 10,000 VMs, {beats}; {args.requests} timed "
          f"requests per page, {args.envs} Envs of {VMS_PER_ENV} placed")
    started = time.perf_counter()
    last = {}
    with Cleanup() as cleanup:
        for label in ("sqlite", "postgres"):
            if args.only in (None, label):
                last[label] = print_table(label, run_database(label, args, cleanup))
    label = "postgres" if "postgres" in last else "sqlite"
    f = last[label]
    print(f"\n(took {time.perf_counter() - started:.0f} s; the line below is "
          f"{'PostgreSQL' if label == 'postgres' else 'SQLite'}'s)")
    print(f"fleet: placement p95 {f['place']:.1f} ms at 100 nodes, list p95 {f['list']:.1f} ms, "
          f"queries constant: {'yes' if f['constant'] else 'no'} "
          f"(targets: placement <= {PLACEMENT_TARGET_MS:.0f} ms {met(f['place'], PLACEMENT_TARGET_MS)}, "
          f"list <= {LIST_TARGET_MS:.0f} ms {met(f['list'], LIST_TARGET_MS)})")


if __name__ == "__main__":
    main()
