"""env_ready --warm: an Env of 3 VMs from a full warm pool, against the same Env cold, in
one run, through a real task cluster (`manage.py tt_qcluster`, the ORM broker, the
default settings), as a user's request really goes.

Each round: env_create (the service the API calls) of 3 busybox VMs (1 vCPU, 128 MiB,
port 80), clock from the call, until each answers HTTP with its own address through
its forwarded port, polled every 20 ms from the client namespace. The warm rounds
run with the node's pool full (3 spares of that size), refilled by the cluster before
each round: first with spares saved to disk (the pool's default), then paused in memory
(`--keep saved` or `--keep paused`: that kind only). Then the pool is switched off (its
spares discarded) and the cold rounds run. The parts of the control plane come from the
create operation: the service's own time, the broker's pick-up (created -> started), the
task's start to its first engine call, and each VM's rewiring and restore.
"""

from __future__ import annotations

import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import _common as c

VMS = 3
MEM_MB = 128
TARGET_S = 1.0
TARGET_RATIO = 0.2
DEADLINE_S = 300
_WARM_LINE = re.compile(
    r"(\S+): warm: (?:restored|resumed) from a (?:saved|paused) spare in ([\d.]+) s "
    r"\(network rewired in (\d+) ms, engine called (\d+) ms into the task\)"
)


def wait_for(what: str, check, deadline_s: float = 240, interval: float = 0.2):
    limit = time.monotonic() + deadline_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > limit:
            raise RuntimeError(f"{what}: not within {deadline_s} s")
        time.sleep(interval)


# Each warm side: spares saved to disk (the default), then paused in memory.
KEEPS = ("saved", "paused")


def pool_kept(pool, keep: str) -> bool:
    from vms import warm

    key = warm.warm_key_of(pool.template, keep)
    return not pool.spares.live().exclude(warm_key=key).exists()


def pool_full(pool) -> bool:
    from vms.models import Vm

    return pool.spares.live().filter(status=Vm.Status.SUSPENDED).count() >= VMS and not \
        pool.spares.live().exclude(status=Vm.Status.SUSPENDED).exists() and all_parked(pool)


def all_parked(pool) -> bool:
    """Saved spares on a node that parks restores wait with their QEMU launched
    (engines/libvirt/parking.py) a second or so after they are saved: a pool is ready when
    they do, as it is after any real pause between a fill and a create."""
    from nodes.registry import get_engine

    engine = get_engine(pool.node)
    if pool.keep != "saved" or not getattr(engine, "parks", False):
        return True
    return all(engine.park_state(spare.engine_name).startswith("parked") for spare in pool.spares.live())


def one_round(rnd: int, side: str, user) -> dict:
    from envs.models import Env
    from envs.services import env_create, env_destroy
    from operations.models import Operation
    from vms.new_vms import NewVm

    waiter = c.HttpWaiter(netns=c.NETNS)
    specs = [NewVm(name=f"vm{i}", template="tt/busybox", mem_mb=MEM_MB, ports=[80]) for i in range(VMS)]
    t0 = time.monotonic()
    op = env_create(owner=user, by=user, name=f"{side}-{rnd}", vms=specs)
    asked = time.monotonic() - t0
    env = Env.objects.get(pk=op.env_id)
    vms = {vm.name: vm for vm in env.vms.order_by("name")}
    targets = {name: (f"http://{c.NODE_ADDR}:{vm.port_mappings.get().public_port}/", f"ip {vm.ip}<")
               for name, vm in vms.items()}
    ready = waiter.wait(targets, t0, deadline=DEADLINE_S, interval=0.02)
    op = wait_for("the create to end", lambda: Operation.objects.filter(pk=op.pk, status__in=Operation.DONE)
                  .first())
    if op.status != "succeeded":
        raise RuntimeError(f"env_create {op.status}: {op.error_code}: {op.error_message}\n{op.log}")
    parts = {
        "service": asked,
        "pickup": (op.started_at - op.created_at).total_seconds(),
        "warm": [m.groups() for m in _WARM_LINE.finditer(op.log)],
        "log": op.log,
    }
    kinds = sorted(env.vms.values_list("start_kind", flat=True))
    destroyed = env_destroy(env=env, by=user)
    wait_for("the destroy to end",
             lambda: Operation.objects.filter(pk=destroyed.pk, status="succeeded").first())
    return {"total": max(ready.values()), "each": ready, "kinds": kinds, **parts}


def show(rnd: int, side: str, r: dict) -> None:
    each = "  ".join(f"{k} {v:5.2f}" for k, v in sorted(r["each"].items()))
    print(f"  round {rnd} {side}: all {VMS} answer HTTP after {r['total']:5.2f} s ({'/'.join(r['kinds'])}; "
          f"each: {each})")
    if side.startswith("warm"):
        into = max(float(w[3]) for w in r["warm"]) / 1000 if r["warm"] else float("nan")
        rewire = ", ".join(f"{float(w[2]):.0f}" for w in r["warm"])
        restore = ", ".join(f"{float(w[1]):.2f}" for w in r["warm"])
        plane = r["service"] + r["pickup"] + into
        print(f"      control plane {plane * 1000:.0f} ms = service {r['service'] * 1000:.0f} ms + broker "
              f"pick-up {r['pickup'] * 1000:.0f} ms + task to engine {into * 1000:.0f} ms; then rewiring "
              f"{rewire} ms and restores {restore} s, in parallel")


def held_per_spare(pool) -> str:
    from nodes.registry import get_engine

    spares = list(pool.spares.live().select_related("node", "template", "env"))
    engine = get_engine(pool.node)
    disk = [engine.disk_held(vm.to_spec()) or 0 for vm in spares]
    memory = [engine.memory_held(vm.to_spec()) or 0 for vm in spares]
    return (f"per spare: {statistics.mean(disk) / 2**20:.0f} MiB on disk (overlay and saved memory), "
            f"{statistics.mean(memory) / 2**20:.0f} MiB of memory resident, {MEM_MB} MiB of the node's "
            "capacity reserved")


def run_warm(rounds: int, keeps: tuple[str, ...] = KEEPS) -> None:
    c.header(f"env_ready --warm: Env of {VMS} busybox VMs ({MEM_MB} MiB) until HTTP answers, "
             f"warm pool ({' then '.join(keeps)} spares) vs cold, through a real task cluster")
    results: dict[str, list[dict]] = {**{keep: [] for keep in keeps}, "cold": []}
    with c.Cleanup() as cleanup:
        c.throwaway_site(cleanup, inline_tasks=False)
        cleanup.add("bench node", c.remove_node)
        work = Path(tempfile.mkdtemp(prefix="tt-bench-warm-"))
        cleanup.add("cluster work dir", shutil.rmtree, work, ignore_errors=True)
        rounds_on(prepare(work, cleanup, keeps[0]), rounds, results, keeps)
    summarise(results, keeps)


def prepare(work: Path, cleanup: c.Cleanup, keep: str):
    """The node, its template, a user, an operator, the task cluster and a full pool."""
    import io

    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from nodes.models import Node
    from tests.integration.cluster import Cluster
    from vms import warm
    from vms.models import VmTemplate, WarmPool

    opts = {k: v for k, v in c.NODE.items() if k != "name"}
    call_command("tt_prepare_node", c.NODE["name"], template=True, stdout=io.StringIO(), **opts)
    node = Node.objects.get(name=c.NODE["name"])
    users = get_user_model().objects
    user = users.create_user(username="bench", password="bench-pw")
    # Saving a pool takes vms.change_warmpool: a superuser holds it.
    operator = users.create_superuser(username="operator", password="bench-pw", email="")
    cluster = Cluster(work / "cluster.log")
    cleanup.add("task cluster", cluster.close)
    cluster.start()
    template = VmTemplate.objects.get(name="tt/busybox")
    pool = warm.pool_save(pool=WarmPool(node=node, template=template, size=VMS, keep=keep, vm_sizes=[
        {"cpu_num": 1, "mem_mb": MEM_MB, "disk_mb": 0}]), by=operator)
    t = time.monotonic()
    wait_for("the pool to fill", lambda: pool_full(pool))
    print(f"  pool of {VMS} {keep} spares filled in {time.monotonic() - t:.1f} s; {held_per_spare(pool)}")
    return pool, user, operator


def rounds_on(prepared, rounds: int, results: dict[str, list[dict]], keeps: tuple[str, ...]) -> None:
    from vms import warm

    pool, user, operator = prepared
    for keep in keeps:
        if pool.keep != keep:  # the other spares are stale now: the pool makes new ones
            pool.keep = keep
            warm.pool_save(pool=pool, by=operator)
            wait_for("the pool to refill", lambda keep=keep: pool_full(pool) and pool_kept(pool, keep))
            print(f"  pool switched to {keep} spares; {held_per_spare(pool)}")
        for rnd in range(1, rounds + 1):
            wait_for("the pool to refill", lambda: pool_full(pool))
            result = one_round(rnd, "warm", user)
            results[keep].append(result)
            show(rnd, f"warm, {keep}", result)
    pool.enabled = False
    warm.pool_save(pool=pool, by=operator)
    wait_for("the pool to empty", lambda: not pool.spares.live().exists())
    for rnd in range(1, rounds + 1):
        result = one_round(rnd, "cold", user)
        results["cold"].append(result)
        show(rnd, "cold", result)


def summarise(results: dict[str, list[dict]], keeps: tuple[str, ...]) -> None:
    medians = {side: statistics.median(r["total"] for r in rs) for side, rs in results.items()}
    for side, rs in results.items():
        listed = ", ".join(f"{r['total']:.2f}" for r in rs)
        print(f"  median {side:<6} {medians[side]:5.2f} s over {len(rs)} rounds: {listed}")
    cold = medians["cold"]
    for keep in keeps:
        print(f"  {c.verdict(f'warm ({keep} spares), seconds', medians[keep], TARGET_S)}; "
              f"{c.verdict('ratio warm/cold', medians[keep] / cold, TARGET_RATIO)}")
    if "saved" in keeps and keeps[-1] != "saved":
        print(f"  warm (saved spares): {medians['saved']:.2f} s, cold: {cold:.2f} s, "
              f"ratio {medians['saved'] / cold:.2f}")
    last = keeps[-1]
    print(f"  the last line: warm = a pool of {last} spares")
    print(f"warm: {medians[last]:.2f} s, cold: {cold:.2f} s, ratio {medians[last] / cold:.2f}")
