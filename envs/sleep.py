"""Sleep when idle, wake on the first connection (docs/guide/sleep.md).

An Env with `idle_suspend` minutes sleeps once that long has passed without a new
connection on its forwarded ports and without console, exec or file use (`touch`): every
VM is saved (libvirt's managed save), and its forwarded TCP ports lead to its node's
waker (engines/network/waker.py) through the `wake_tcp` map. The first connection there
records and runs the Env's wake: its VMs are restored, then the map lets later
connections go straight to them, in one nft transaction. The waker splices the first
connection to the guest once its port answers. A UDP datagram wakes it too, at the next
reading of the counters, without an answer.

Activity is read once per TT_IDLE_CHECK_SECONDS by each task cluster for the nodes it
serves (`check_node`): the element counters of the node's forwarded-port maps (NAT looks
a connection up once, at its first packet), compared with the last reading kept in
`Env.port_marks`. No Python sees a packet.

Both run in the cluster's main process, in one thread (`start`): the waker's asyncio loop,
which runs the periodic check in its executor.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from audit import context as audit_context
from audit.recording import already_recorded, audited
from engines.errors import ErrorCode, fails_as
from engines.network.waker import Waker
from engines.specs import Feature
from envs.kinds import EnvKind
from envs.models import Env
from nodes.models import Node
from nodes.registry import driver_class, get_engine
from operations import runner
from operations.models import Operation
from operations.recording import record
from ttportal import limits
from ttportal.errors import IllegalState, InvalidInput, NoCapacity
from vms import state
from vms import steps as vm_steps
from vms.models import NodeUsage, PortMapping, Vm
from vms.placement import lock_placement
from vms.state import VmAction

log = logging.getLogger(__name__)

# How long a connection waits for its Env's wake before it is closed.
WAKE_TIMEOUT = 120.0
# A wake refused for want of room is recorded once in this long: the connections that
# follow meanwhile are refused by that record, so a client dialing in a loop cannot fill
# the operations table.
REFUSED_WAKE_HOLDS = timedelta(seconds=30)


# Who acts, in the audit log, when the idle check puts an Env to sleep or a datagram wakes
# it, and when a connection to a sleeping port wakes it (the system, by these names).
IDLE_CHECK, WAKER = "tt: idle check", "tt: waker"


IDLE_SUSPEND_RULE = (limits.between(limits.IDLE_SUSPEND_MIN, limits.IDLE_SUSPEND_MAX, "minutes")
                     + ", or null (never)")


def check_idle_suspend(value, field: str = "idle_suspend") -> int | None:
    """The minutes an Env may stay idle, checked; None (never sleeps)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not (
        limits.IDLE_SUSPEND_MIN <= value <= limits.IDLE_SUSPEND_MAX
    ):
        raise InvalidInput(field, IDLE_SUSPEND_RULE)
    return value


def default_idle_suspend() -> int | None:
    """The site's default for a new Env (TT_IDLE_SUSPEND_DEFAULT_MIN; 0: never)."""
    return settings.TT_IDLE_SUSPEND_DEFAULT_MIN or None


# --- sleeping ------------------------------------------------------------------------


@audited("env.sleep", skip_none=True)
def env_sleep(env_id: int, now=None) -> Operation | None:
    """Put an idle Env to sleep: every VM claimed for a save. None when it cannot sleep
    now (a VM not running or busy, an engine that cannot save memory)."""
    now = now or timezone.now()
    try:
        with transaction.atomic():
            env = Env.objects.select_for_update().filter(
                pk=env_id, status=Env.Status.ACTIVE, asleep_since=None, is_stopped=False, is_warm_pool=False
            ).first()
            if env is None:
                return None
            vms = list(env.vms.live().select_related("node").order_by("pk"))
            if not vms or any(vm.status != Vm.Status.RUNNING for vm in vms):
                return None
            if any(Feature.SUSPEND not in driver_class(vm.node.kind).features for vm in vms):
                return None
            for vm in vms:
                state.claim(vm, VmAction.SUSPEND)
            Env.objects.filter(pk=env.pk).update(asleep_since=now)
            idle = env.active_at or env.start_at
            return record(EnvKind.ENV_SLEEP, env=env, by=None, params={
                "vm_ids": [vm.pk for vm in vms], "idle_since": idle.isoformat()})
    except IllegalState:
        return None


def _point(vm: Vm, *, asleep: bool) -> None:
    """Lead the VM's TCP ports to its node's waker (asleep) or to the VM, in one nft transaction."""
    spec = vm.to_spec()
    wake_to = (vm.node.gateway_ip, settings.TT_WAKER_PORT)
    new, old = (spec.replace(wake_to=wake_to), spec.replace(wake_to=None))
    if not asleep:
        new, old = old, new
    with fails_as(ErrorCode.FIREWALL_SET_NET):
        get_engine(vm.node).set_net(new, previous=old)


def _sleep(op: Operation, progress) -> None:
    # The ports lead to the waker first: a connection during the saves waits for the wake.
    for vm in vm_steps.vms_of(op):
        _point(vm, asleep=True)
    progress(10, "forwarded TCP ports lead to the node's waker")
    try:
        vm_steps.power_vms(op, progress, VmAction.SUSPEND)
    finally:
        # Saved: their vCPUs and memory go back to their nodes (vms/node_usage.py).
        Vm.objects.filter(pk__in=op.vm_ids, status=Vm.Status.SUSPENDED).update(asleep_at=timezone.now())


def _settle_sleep(op: Operation) -> None:
    """A sleep that failed: VMs settle; if none is saved the Env is awake again."""
    vm_steps.settle_power(op)
    vms = list(vm_steps.vms_of(op))
    if all(vm.status == Vm.Status.RUNNING for vm in vms):
        Env.objects.filter(pk=op.env_id).update(asleep_since=None, active_at=timezone.now())
        for vm in vms:
            vm.env.refresh_from_db()
            vm_steps.resync_network(vm)


# --- waking --------------------------------------------------------------------------


@audited("env.wake", skip_none=True, refused_when_failed=True,
         detail=lambda kwargs, result: {"why": kwargs["why"][:200]})
def env_wake(env_id: int, *, why: str, by=None) -> Operation | None:
    """Wake a sleeping Env: its saved VMs claimed for a start. None when it is not asleep;
    the live wake or sleep operation when one holds it already (no new event: the wake
    under way was recorded). `by`: who caused it, for the audit log (going into a VM);
    None: the system (a connection, a datagram)."""
    with transaction.atomic():
        env = Env.objects.select_for_update().filter(pk=env_id, status=Env.Status.ACTIVE).first()
        if env is None or env.asleep_since is None:
            return None
        live = Operation.objects.filter(env=env, kind__in=[EnvKind.ENV_SLEEP, EnvKind.ENV_WAKE]).exclude(
            status__in=Operation.DONE).order_by("-pk").first()
        if live is not None:
            return already_recorded(live)
        refused = Operation.objects.filter(
            env=env, kind=EnvKind.ENV_WAKE, status=Operation.Status.FAILED, error_code=ErrorCode.NO_CAPACITY,
            finished_at__gte=timezone.now() - REFUSED_WAKE_HOLDS).order_by("-pk").first()
        if refused is not None:
            return already_recorded(refused)
        vms = list(env.vms.live().select_related("node").order_by("pk"))
        short = _no_room_for([vm for vm in vms
                              if vm.asleep_at is not None and vm.status == Vm.Status.SUSPENDED])
        if short:
            return record(EnvKind.ENV_WAKE, env=env, by=None, run=False, status=Operation.Status.FAILED,
                          params={"vm_ids": [], "why": why},
                          error=NoCapacity(f"cannot wake Env {env.name}: {short}; the connection was "
                                           "refused, the next one tries again"))
        ids = []
        for vm in vms:
            if state.can(vm, VmAction.START):
                state.claim(vm, VmAction.START)
                ids.append(vm.pk)
        return record(EnvKind.ENV_WAKE, env=env, by=None, params={"vm_ids": ids, "why": why})


def _no_room_for(vms: list[Vm]) -> str:
    """Why the sleeping `vms` do not fit on their nodes now ("" when they do), under
    placement's lock: their vCPUs and memory were given back while they slept."""
    if not vms:
        return ""
    nodes = {vm.node_id: vm.node for vm in vms}
    lock_placement(Node.objects.filter(pk__in=nodes))
    usage = {u.node_id: u for u in NodeUsage.objects.filter(node_id__in=nodes)}
    for node_id, node in nodes.items():
        cpu = sum(vm.cpu_num for vm in vms if vm.node_id == node_id)
        mem = sum(vm.mem_mb for vm in vms if vm.node_id == node_id)
        used = usage.get(node_id)
        used_cpu, used_mem = (used.cpu, used.mem_mb) if used else (0, 0)
        if node.cpu_capacity and used_cpu + cpu > node.cpu_capacity:
            return f"node {node.name} has {max(node.cpu_capacity - used_cpu, 0)} vCPUs free, {cpu} needed"
        if node.mem_capacity_mb and used_mem + mem > node.mem_capacity_mb:
            free = max(node.mem_capacity_mb - used_mem, 0)
            return f"node {node.name} has {free} MiB free, {mem} MiB needed"
    return ""


def _wake(op: Operation, progress) -> None:
    vm_steps.power_vms(op, progress, VmAction.START)
    Vm.objects.filter(env_id=op.env_id, asleep_at__isnull=False).exclude(status=Vm.Status.SUSPENDED).update(
        asleep_at=None)
    env_vms = list(Vm.objects.live().filter(env_id=op.env_id).select_related("node", "env", "template"))
    for vm in env_vms:
        _point(vm, asleep=False)
    Env.objects.filter(pk=op.env_id).update(asleep_since=None, active_at=timezone.now(), port_marks={})
    progress(95, "forwarded TCP ports lead to the VMs again")


def steps():
    from operations.registry import Step

    return {
        EnvKind.ENV_SLEEP: Step(run=_sleep, settle=_settle_sleep),
        EnvKind.ENV_WAKE: Step(run=_wake, settle=vm_steps.settle_power),
    }


def wake_for(node_id: int, public_port: int, client_ip: str) -> tuple[str, int] | None:
    """The waker's question: a connection from `client_ip` reached public TCP port
    `public_port` of node `node_id`. Wake its Env if it sleeps (the system, WAKER); where
    to send the connection once its guest is up (VM ip, inner port), or None to refuse it."""
    with audit_context.system(WAKER, interface=audit_context.SYSTEM):
        return _wake_for(node_id, public_port, client_ip)


def _wake_for(node_id: int, public_port: int, client_ip: str) -> tuple[str, int] | None:
    mapping = (PortMapping.objects.filter(node_id=node_id, protocol="tcp", public_port=public_port)
               .select_related("vm").first())
    if mapping is None:
        return None
    vm = mapping.vm
    if client_ip in (vm.net_blacklist or ()):
        return None  # what the firewall would have dropped
    deadline = time.monotonic() + WAKE_TIMEOUT
    while time.monotonic() < deadline:
        env = Env.objects.get(pk=vm.env_id)
        vm.refresh_from_db(fields=["status"])
        if env.asleep_since is None:
            return (vm.ip, mapping.inner_port) if vm.status == Vm.Status.RUNNING else None
        op = env_wake(env.pk, why=f"a connection from {client_ip} to port {public_port}")
        if op is None:
            continue
        if op.kind == EnvKind.ENV_WAKE:
            runner.execute(op.pk)  # here, now, unless a worker took it first
        op.refresh_from_db()
        while not op.is_done and time.monotonic() < deadline:
            time.sleep(0.02)
            op.refresh_from_db()
        if op.kind == EnvKind.ENV_WAKE and op.status != Operation.Status.SUCCEEDED:
            return None  # refused: the operation says why
    return None


# --- the periodic check --------------------------------------------------------------


def served_nodes() -> list[Node]:
    """The nodes this cluster serves: its own node, or the site's nodes without one."""
    from operations import worker

    name = worker.cluster_name()
    if name != settings.Q_CLUSTER["name"]:
        return list(Node.objects.filter(name=name, enabled=True))
    return list(Node.objects.filter(own_cluster=False, enabled=True))


def check_node(node: Node, now=None) -> list[Operation]:
    """Read the node's port counters once: note activity, wake sleeping Envs a UDP
    datagram reached, and put Envs idle long enough to sleep (the system, IDLE_CHECK).
    The operations recorded."""
    with audit_context.system(IDLE_CHECK, interface=audit_context.SYSTEM):
        return _check_node(node, now)


def _check_node(node: Node, now=None) -> list[Operation]:
    now = now or timezone.now()
    engine = get_engine(node)
    firewall = getattr(engine, "firewall", None)
    if firewall is None or Feature.SUSPEND not in driver_class(node.kind).features:
        return []
    # (protocol, public port) -> connections: fwd_tcp's and wake_tcp's summed per port.
    counts = firewall.port_connections()
    by_env: dict[int, dict[str, int]] = {}
    udp_keys: set[str] = set()
    rows = PortMapping.objects.filter(node=node).values_list("vm__env_id", "protocol", "public_port")
    for env_id, proto, port in rows:
        key = f"{node.name}/{proto}/{port}"
        by_env.setdefault(env_id, {})[key] = counts.get((proto, port), 0)
        if proto == "udp":
            udp_keys.add(key)
    ops = []
    for env in Env.objects.filter(pk__in=by_env, status=Env.Status.ACTIVE, is_warm_pool=False):
        marks = by_env[env.pk]
        old = {k: v for k, v in (env.port_marks or {}).items() if k.startswith(f"{node.name}/")}
        # A port not read before counts from 0. A counter that went back was written again
        # (the reconcile pass rebuilds the maps): what it counts since is new connections.
        changed = {k for k, v in marks.items() if v > old.get(k, 0) or (v < old.get(k, 0) and v > 0)}
        if changed or marks != old:
            others = {k: v for k, v in (env.port_marks or {}).items() if not k.startswith(f"{node.name}/")}
            fields = {"port_marks": {**others, **marks}}
            if changed:
                fields["active_at"] = env.active_at = now
            Env.objects.filter(pk=env.pk).update(**fields)
        if env.asleep_since is not None:
            if changed & udp_keys:  # a datagram to a sleeping port: no waker for UDP
                op = env_wake(env.pk, why="a UDP datagram")
                if op is not None:
                    ops.append(op)
            continue
        minutes = env.idle_suspend  # the site's default was given at its creation
        if not minutes or env.is_stopped:
            continue
        idle_since = max(t for t in (env.active_at, env.last_mgmt_at, env.start_at) if t is not None)
        if now - idle_since >= timedelta(minutes=minutes):
            op = env_sleep(env.pk, now)
            if op is not None:
                ops.append(op)
    return ops


def check_served(now=None) -> int:
    """check_node for each node this cluster serves; how many operations it recorded."""
    close_old_connections()
    count = 0
    for node in served_nodes():
        try:
            count += len(check_node(node, now))
        except Exception:
            log.exception("idle check of node %s failed", node.name)
    close_old_connections()
    return count


# --- the cluster's thread ------------------------------------------------------------


_thread: threading.Thread | None = None


def start(cluster: str) -> None:
    """Start the waker and the periodic check in a daemon thread of this process (the
    task cluster's main process: tt_qcluster)."""
    global _thread
    if _thread is not None:
        return
    _thread = threading.Thread(target=lambda: asyncio.run(_serve()), name="tt-waker", daemon=True)
    _thread.start()


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    nodes: dict[str, int] = {}

    def wake(node_id: int):
        def ask(port: int, client: str):
            close_old_connections()  # a thread of the loop's executor: its own connection
            try:
                return wake_for(node_id, port, client)
            finally:
                close_old_connections()

        return ask

    wakers: dict[int, Waker] = {}
    while True:
        try:
            served = await loop.run_in_executor(None, _served_gateways)
            for node_id, gateway in served:
                if node_id not in wakers:
                    wakers[node_id] = Waker(wake(node_id))
                try:
                    await wakers[node_id].listen(gateway, settings.TT_WAKER_PORT)
                    nodes[gateway] = node_id
                except OSError as exc:
                    log.warning("waker: cannot listen on %s:%s yet: %s", gateway, settings.TT_WAKER_PORT, exc)
            await loop.run_in_executor(None, check_served)
        except Exception:
            log.exception("waker loop")
        await asyncio.sleep(settings.TT_IDLE_CHECK_SECONDS)


def _served_gateways() -> list[tuple[int, str]]:
    close_old_connections()
    try:
        return [(node.pk, node.gateway_ip) for node in served_nodes()
                if Feature.SUSPEND in driver_class(node.kind).features]
    finally:
        close_old_connections()


