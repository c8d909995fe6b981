"""VM and snapshot actions. Every interface (portal, API, admin, tasks) calls these.

Request side: check permission, validate, claim the VM's status, apply the
Env's management cooldown, record the Operation; the task is enqueued on
commit. Step side (registered with `step_for`): call the engine with no
transaction or lock held, then commit the result.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from engines.registry import driver_class, get_engine
from engines.specs import Feature, PortSpec, PowerState, SnapshotSpec
from envs import policy
from envs.models import Env, Operation
from envs.operations import idempotent, record, step_for, sweep
from ttportal.errors import EngineError, IllegalState, InvalidInput, TTError, Unsupported
from vms import allocation, state
from vms.models import PortMapping, Snapshot, Vm
from vms.specs import (
    NewVm,
    check_name,
    parse_blacklist,
    parse_ports,
    pick_node,
    validate_new_vm,
    wanted_features,
)

K = Operation.Kind
log = logging.getLogger(__name__)


def _locked_env(env: Env) -> Env:
    return Env.objects.select_for_update().get(pk=env.pk)


def _require_feature(vm: Vm, feature: Feature) -> None:
    if feature not in driver_class(vm.node.kind).features:
        raise Unsupported(f"the {vm.node.kind} engine of node {vm.node.name} cannot {feature}")


# --- creating VMs -------------------------------------------------------------


def build_vms(env: Env, specs: list[NewVm], *, field: str = "vms") -> list[Vm]:
    """Validate and insert VMs (status creating) with addresses and ports. Inside a transaction."""
    live = env.vms.live().count()
    if live + len(specs) > settings.TT_MAX_VMS_PER_ENV:
        raise InvalidInput(field, f"an Env holds at most {settings.TT_MAX_VMS_PER_ENV} VMs")
    checked = []
    names = set(env.vms.live().values_list("name", flat=True))
    # Nodes are picked before any VM is saved: count what this request already
    # placed, or a many-VM request would overcommit one node's capacity.
    pending: dict[int, tuple[int, int, int]] = {}
    for i, spec in enumerate(specs):
        prefix = f"{field}[{i}]" if field == "vms" else ""
        clean, template, ports = validate_new_vm(spec, prefix)
        name_field = f"{prefix}.name" if prefix else "name"
        if clean.name in names:
            raise InvalidInput(name_field, f"this Env already has a VM named {clean.name}")
        names.add(clean.name)
        wanted = wanted_features(clean.net_kind, rand_uuid=clean.rand_uuid, keep_image=clean.keep_image)
        node = pick_node(template, clean.cpu_num, clean.mem_mb, wanted, prefix or "template", pending)
        placed, cpu, mem = pending.get(node.pk, (0, 0, 0))
        pending[node.pk] = (placed + 1, cpu + clean.cpu_num, mem + clean.mem_mb)
        checked.append((clean, template, ports, node))
    vms = []
    for clean, template, ports, node in checked:
        vm = Vm(
            env=env, node=node, template=template, name=clean.name, status=Vm.Status.CREATING,
            net_kind=clean.net_kind, cpu_num=clean.cpu_num, mem_mb=clean.mem_mb, disk_mb=clean.disk_mb,
            keep_image=clean.keep_image, rand_uuid=clean.rand_uuid,
            uuid=str(uuidlib.uuid4()) if clean.rand_uuid else "",
            features=list(template.features or []),
        )
        allocation.save_with_address(vm)
        for protocol, inner in ports:
            allocation.allocate_port(vm, protocol, inner)
        vms.append(vm)
    return vms


@idempotent
def vm_add(*, env: Env, spec: NewVm, by, idempotency_key: str = "") -> Operation:
    """Add one VM to a live Env: created, then booted, by a task."""
    policy.check_can_manage(by, env)
    env = _locked_env(env)
    policy.check_live(env)
    policy.claim_mgmt_slot(env, timezone.now(), by=by)
    (vm,) = build_vms(env, [spec], field="vm")
    return record(K.VM_ADD, env=env, vm=vm, by=by, idempotency_key=idempotency_key,
                  params={"vm_ids": [vm.pk], "start": not env.is_stopped})


def create_vms_step(op: Operation, progress) -> None:
    """Create (and boot unless the Env is stopped) every VM named in the operation."""
    vm_ids = op.params.get("vm_ids", [])
    failures: list[TTError] = []
    for n, vm in enumerate(Vm.objects.filter(pk__in=vm_ids).select_related("node", "template", "env")):
        share = lambda pct, msg, n=n, vm=vm: progress(  # noqa: E731
            int((n + pct / 100) * 100 / max(1, len(vm_ids))), f"{vm.name}: {msg}"
        )
        try:
            _create_one(vm, start=op.params.get("start", True), progress=share)
        except TTError as exc:
            failures.append(exc)
            share(100, f"failed: {exc}")
    if failures:
        first = failures[0]
        raise EngineError(
            f"{len(failures)} of {len(vm_ids)} VMs failed; first: {first}", code=first.code
        )


def _create_one(vm: Vm, *, start: bool, progress) -> None:
    if vm.status != Vm.Status.CREATING:
        return  # a retried task: this one is done
    engine = get_engine(vm.node)
    spec = vm.to_spec()
    try:
        image = engine.create_vm(spec, progress)
    except TTError:
        # The engine rolled back its part; give back addresses and ports too,
        # so a failed create leaves nothing behind.
        allocation.release(vm)
        Vm.objects.filter(pk=vm.pk).update(status=Vm.Status.DESTROYED, destroyed_at=timezone.now())
        raise
    Vm.objects.filter(pk=vm.pk).update(
        runtime_image=image, status=Vm.Status.STOPPED, latest_meta=spec.replace(runtime_image=image).to_meta()
    )
    if start:
        vm.refresh_from_db()
        Vm.objects.filter(pk=vm.pk).update(status=Vm.Status.STARTING)
        _power(vm, engine, "start", progress)


step_for(K.VM_ADD)(create_vms_step)


# --- power --------------------------------------------------------------------


def _settle(vm: Vm, engine=None) -> None:
    """After a failure, put the VM in the status the engine really reports (else error)."""
    try:
        power = (engine or get_engine(vm.node)).power_state(vm.to_spec())
    except Exception:
        power = None
    status = {PowerState.RUNNING: Vm.Status.RUNNING, PowerState.STOPPED: Vm.Status.STOPPED}.get(
        power, Vm.Status.ERROR
    )
    Vm.objects.filter(pk=vm.pk).update(status=status)


def _power(vm: Vm, engine, action: str, progress) -> None:
    spec = vm.to_spec()
    try:
        if action == "start":
            progress(50, "booting")
            engine.start_vm(spec)
            final = Vm.Status.RUNNING
        else:
            progress(50, "shutting down")
            engine.stop_vm(spec)
            final = Vm.Status.STOPPED
    except Exception as exc:
        _settle(vm, engine)
        if isinstance(exc, TTError):
            raise
        code = "start_vm" if action == "start" else "stop_vm"
        raise EngineError(f"{exc.__class__.__name__}: {exc}", code=code) from exc
    Vm.objects.filter(pk=vm.pk).update(status=final)


def _vm_power_request(vm: Vm, action: str, kind: str, by, idempotency_key: str) -> Operation:
    policy.check_can_manage(by, vm.env)
    _require_feature(vm, Feature.START_STOP)
    env = _locked_env(vm.env)
    policy.check_live(env)
    policy.claim_mgmt_slot(env, timezone.now(), by=by)
    state.claim(vm, action)
    return record(kind, env=env, vm=vm, by=by, idempotency_key=idempotency_key)


@idempotent
def vm_start(*, vm: Vm, by, idempotency_key: str = "") -> Operation:
    return _vm_power_request(vm, "start", K.VM_START, by, idempotency_key)


@idempotent
def vm_stop(*, vm: Vm, by, idempotency_key: str = "") -> Operation:
    return _vm_power_request(vm, "stop", K.VM_STOP, by, idempotency_key)


@step_for(K.VM_START, K.VM_STOP)
def _vm_power_step(op: Operation, progress) -> None:
    vm = Vm.objects.select_related("node", "template", "env").get(pk=op.vm_id)
    action = "start" if op.kind == K.VM_START else "stop"
    transient = state.TRANSITIONS[action][1]
    if vm.status != transient:
        return  # a retried task after the work was committed
    _power(vm, get_engine(vm.node), action, progress)


# --- destroy ------------------------------------------------------------------


@idempotent
def vm_destroy(*, vm: Vm, by, idempotency_key: str = "") -> Operation:
    policy.check_can_manage(by, vm.env)
    env = _locked_env(vm.env)
    if env.status == Env.Status.DESTROYED:
        raise IllegalState(f"Env {env.name} is destroyed")
    policy.claim_mgmt_slot(env, timezone.now(), by=by)
    state.claim(vm, "destroy")
    return record(K.VM_DESTROY, env=env, vm=vm, by=by, idempotency_key=idempotency_key)


def destroy_one(vm: Vm, progress) -> None:
    """Remove the VM from its engine and give back everything it held. Idempotent."""
    if vm.status == Vm.Status.DESTROYED:
        return
    engine = get_engine(vm.node)
    try:
        engine.destroy_vm(vm.to_spec(), progress)
    except TTError:
        Vm.objects.filter(pk=vm.pk).update(status=Vm.Status.ERROR)
        raise
    with transaction.atomic():
        allocation.release(vm)
        Snapshot.objects.filter(vm=vm).delete()
        Vm.objects.filter(pk=vm.pk).update(status=Vm.Status.DESTROYED, destroyed_at=timezone.now())


@step_for(K.VM_DESTROY)
def _vm_destroy_step(op: Operation, progress) -> None:
    vm = Vm.objects.select_related("node", "template", "env").get(pk=op.vm_id)
    destroy_one(vm, progress)


# --- network ------------------------------------------------------------------


@idempotent
def vm_set_blacklist(*, vm: Vm, addresses, by, idempotency_key: str = "") -> Operation:
    """Make the VM unable to reach exactly these addresses (an empty list clears it)."""
    policy.check_can_manage(by, vm.env)
    blacklist = parse_blacklist(addresses, "addresses")  # named as the parameter and the forms
    policy.check_live(vm.env)
    state.claim_network(vm)
    vm.refresh_from_db(fields=["net_blacklist"])  # the caller's copy may predate the last change
    previous = list(vm.net_blacklist or [])
    Vm.objects.filter(pk=vm.pk).update(net_blacklist=blacklist)
    return record(K.VM_SET_BLACKLIST, env=vm.env, vm=vm, by=by, idempotency_key=idempotency_key,
                  params={"previous": previous, "blacklist": blacklist})


@step_for(K.VM_SET_BLACKLIST)
def _vm_blacklist_step(op: Operation, progress) -> None:
    vm = Vm.objects.select_related("node", "template", "env").get(pk=op.vm_id)
    new = vm.to_spec()
    old = new.replace(blacklist=tuple(op.params.get("previous", [])))
    try:
        progress(50, f"blacklist: {', '.join(vm.net_blacklist) or 'empty'}")
        get_engine(vm.node).set_blacklist(new, previous=old)
    except Exception as exc:
        Vm.objects.filter(pk=vm.pk).update(net_blacklist=op.params.get("previous", []))
        raise _as_engine_error(exc, "net_blacklist") from exc
    finally:
        state.release_network([vm.pk])


@idempotent
def vm_set_ports(*, vm: Vm, ports, by, idempotency_key: str = "") -> Operation:
    """Make the VM's forwarded inner ports exactly `ports`; kept ones keep their public port."""
    policy.check_can_manage(by, vm.env)
    wanted = parse_ports(ports, "ports")
    if vm.net_kind == Vm.NetKind.FLAT and wanted:
        raise InvalidInput("ports", "FLAT VMs are reached at their own address and have no port map")
    policy.check_live(vm.env)
    state.claim_network(vm)
    current = {(p.protocol, p.inner_port): p for p in vm.port_mappings.all()}
    previous = [[p.protocol, p.inner_port, p.public_port] for p in current.values()]
    for key, mapping in current.items():
        if key not in wanted:
            mapping.delete()
    for protocol, inner in wanted:
        if (protocol, inner) not in current:
            allocation.allocate_port(vm, protocol, inner)
    return record(K.VM_SET_PORTS, env=vm.env, vm=vm, by=by, idempotency_key=idempotency_key,
                  params={"previous": previous, "ports": [list(p) for p in wanted]})


@step_for(K.VM_SET_PORTS)
def _vm_ports_step(op: Operation, progress) -> None:
    vm = Vm.objects.select_related("node", "template", "env").get(pk=op.vm_id)
    new = vm.to_spec()
    previous = [PortSpec(proto, inner, public) for proto, inner, public in op.params.get("previous", [])]
    old = new.replace(ports=tuple(previous))
    try:
        progress(50, "updating port map")
        get_engine(vm.node).set_net(new, previous=old)
    except Exception as exc:
        # nft changes are atomic, so the node still holds the old map: put it
        # back in the database too.
        with transaction.atomic():
            PortMapping.objects.filter(vm=vm).delete()
            for p in previous:
                PortMapping.objects.create(vm=vm, node=vm.node, protocol=p.protocol,
                                           inner_port=p.inner_port, public_port=p.public_port)
        raise _as_engine_error(exc, "net_set") from exc
    finally:
        state.release_network([vm.pk])


def _as_engine_error(exc: Exception, code: str) -> TTError:
    if isinstance(exc, TTError):
        return exc
    return EngineError(f"{exc.__class__.__name__}: {exc}", code=code)


# --- snapshots ----------------------------------------------------------------


def _check_life_time(life_time) -> int | None:
    if life_time in (None, "", 0):
        return None
    if isinstance(life_time, bool):
        raise InvalidInput("life_time", "must be a number of seconds")
    try:
        seconds = int(life_time)
    except (TypeError, ValueError):
        raise InvalidInput("life_time", "must be a number of seconds") from None
    if not 60 <= seconds <= 365 * 24 * 3600:
        raise InvalidInput("life_time", "must be between 60 seconds and 365 days")
    return seconds


@idempotent
def snapshot_create(*, vm: Vm, name: str, by, life_time=None, idempotency_key: str = "") -> Operation:
    """Snapshot the VM (stopped for consistency, then back to its power state)."""
    policy.check_can_manage(by, vm.env)
    check_name(name, "name")
    seconds = _check_life_time(life_time)
    _require_feature(vm, Feature.SNAPSHOT)
    if vm.snapshots.filter(name=name).exists():
        raise InvalidInput("name", f"VM {vm.name} already has a snapshot named {name}")
    env = _locked_env(vm.env)
    policy.check_live(env)
    now = timezone.now()
    policy.claim_mgmt_slot(env, now, by=by)
    previous = state.claim(vm, "snapshot")
    snapshot = Snapshot.objects.create(
        vm=vm, name=name, life_time=seconds, created_at=now,
        expires_at=now + timedelta(seconds=seconds) if seconds else None,
    )
    return record(K.SNAPSHOT_CREATE, env=env, vm=vm, snapshot=snapshot, by=by,
                  idempotency_key=idempotency_key, params={"previous_status": previous})


@step_for(K.SNAPSHOT_CREATE)
def _snapshot_create_step(op: Operation, progress) -> None:
    snapshot = Snapshot.objects.select_related("vm__node", "vm__template", "vm__env").filter(
        pk=op.snapshot_id
    ).first()
    if snapshot is None or snapshot.status != Snapshot.Status.CREATING:
        return
    vm = snapshot.vm
    engine = get_engine(vm.node)
    try:
        result = engine.create_snapshot(vm.to_spec(), snapshot.name, progress)
    except Exception as exc:
        try:  # a half-made snapshot must not stay in the image
            engine.destroy_snapshot(vm.to_spec(), SnapshotSpec(name=snapshot.name, path=snapshot.name))
        except Exception:
            log.exception("could not remove the half-made snapshot %s", snapshot)
        snapshot.delete()
        _settle(vm, engine)
        raise _as_engine_error(exc, "snapshot_create") from exc
    Snapshot.objects.filter(pk=snapshot.pk).update(
        status=Snapshot.Status.READY, path=result.path, meta=result.meta
    )
    _settle(vm, engine)


@idempotent
def snapshot_apply(*, snapshot: Snapshot, by, idempotency_key: str = "") -> Operation:
    """Put the VM back to the snapshot: its disk and its config; power state as it was."""
    vm = snapshot.vm
    policy.check_can_manage(by, vm.env)
    env = _locked_env(vm.env)
    policy.check_live(env)
    policy.claim_mgmt_slot(env, timezone.now(), by=by)
    if not Snapshot.objects.filter(pk=snapshot.pk, status=Snapshot.Status.READY).update(
        status=Snapshot.Status.APPLYING
    ):
        raise IllegalState(f"snapshot {snapshot.name} is {snapshot.status}, not ready")
    state.claim(vm, "apply")
    return record(K.SNAPSHOT_APPLY, env=env, vm=vm, snapshot=snapshot, by=by,
                  idempotency_key=idempotency_key)


@step_for(K.SNAPSHOT_APPLY)
def _snapshot_apply_step(op: Operation, progress) -> None:
    snapshot = Snapshot.objects.select_related("vm__node", "vm__template", "vm__env").get(pk=op.snapshot_id)
    vm = snapshot.vm
    if snapshot.status != Snapshot.Status.APPLYING:
        return
    engine = get_engine(vm.node)
    try:
        restored = engine.apply_snapshot(
            vm.to_spec(), SnapshotSpec(name=snapshot.name, path=snapshot.path, meta=snapshot.meta), progress
        )
    except Exception as exc:
        Snapshot.objects.filter(pk=snapshot.pk).update(status=Snapshot.Status.READY)
        _settle(vm, engine)
        raise _as_engine_error(exc, "snapshot_apply") from exc
    Vm.objects.filter(pk=vm.pk).update(
        cpu_num=restored.cpu_num, mem_mb=restored.mem_mb, disk_mb=restored.disk_mb,
        latest_meta=restored.to_meta(),
    )
    Snapshot.objects.filter(pk=snapshot.pk).update(status=Snapshot.Status.READY)
    _settle(vm, engine)


@idempotent
def snapshot_destroy(*, snapshot: Snapshot, by, idempotency_key: str = "",
                     kind: str = K.SNAPSHOT_DESTROY) -> Operation:
    vm = snapshot.vm
    policy.check_can_manage(by, vm.env)
    if not Snapshot.objects.filter(pk=snapshot.pk, status=Snapshot.Status.READY).update(
        status=Snapshot.Status.DESTROYING
    ):
        snapshot.refresh_from_db(fields=["status"])
        raise IllegalState(f"snapshot {snapshot.name} is {snapshot.status}, not ready")
    return record(kind, env=vm.env, vm=vm, snapshot=snapshot, by=by, idempotency_key=idempotency_key,
                  target=f"{vm.env.name}/{vm.name}@{snapshot.name}")


@step_for(K.SNAPSHOT_DESTROY, K.SNAPSHOT_EXPIRE)
def _snapshot_destroy_step(op: Operation, progress) -> None:
    snapshot = Snapshot.objects.select_related("vm__node", "vm__template", "vm__env").filter(
        pk=op.snapshot_id
    ).first()
    if snapshot is None:
        return  # already gone (a retried task)
    vm = snapshot.vm
    try:
        progress(50, f"removing snapshot {snapshot.name}")
        get_engine(vm.node).destroy_snapshot(
            vm.to_spec(), SnapshotSpec(name=snapshot.name, path=snapshot.path, meta=snapshot.meta)
        )
    except Exception as exc:
        Snapshot.objects.filter(pk=snapshot.pk).update(status=Snapshot.Status.READY)
        raise _as_engine_error(exc, "snapshot_destroy") from exc
    snapshot.delete()


def snapshot_expire_due(now=None, limit: int = 100) -> list[Operation]:
    """Queue the removal of snapshots whose life time has passed, one at a time."""
    now = now or timezone.now()
    due = Snapshot.objects.filter(status=Snapshot.Status.READY, expires_at__lte=now).order_by("expires_at")
    return sweep(due.values_list("pk", flat=True), snapshot_expire_one, now, limit)


def snapshot_expire_one(snapshot_id: int, *, now=None) -> Operation | None:
    """One step of the sweep: expire this snapshot if it is still due and ready."""
    now = now or timezone.now()
    snapshot = Snapshot.objects.select_related("vm__env").filter(
        pk=snapshot_id, status=Snapshot.Status.READY, expires_at__lte=now
    ).first()
    if snapshot is None:
        return None
    try:
        return snapshot_destroy(snapshot=snapshot, by=None, kind=K.SNAPSHOT_EXPIRE)
    except IllegalState:
        return None


# --- after a failure ------------------------------------------------------------

S = Vm.Status
# The transient statuses each kind of operation claims VMs into. A step's own
# error handling puts them back; this is for failures it never saw (a crash, or
# an engine that could not even be reached), which would otherwise leave the
# VM in a status no action is allowed from.
_CLAIMS: dict[str, set[str]] = {
    K.ENV_CREATE: {S.CREATING, S.STARTING},
    K.VM_ADD: {S.CREATING, S.STARTING},
    K.ENV_START: {S.STARTING},
    K.VM_START: {S.STARTING},
    K.ENV_STOP: {S.STOPPING},
    K.VM_STOP: {S.STOPPING},
    K.ENV_DESTROY: {S.DESTROYING},
    K.ENV_EXPIRE: {S.DESTROYING},
    K.VM_DESTROY: {S.DESTROYING},
    K.SNAPSHOT_CREATE: {S.SNAPSHOTTING},
    K.SNAPSHOT_APPLY: {S.RESTORING},
}


def settle_failed(op: Operation) -> None:
    """Leave nothing a failed operation claimed in a transient status (called after it failed)."""
    stuck = _CLAIMS.get(op.kind)
    if stuck:
        vm_ids = set(op.params.get("vm_ids", [])) | ({op.vm_id} if op.vm_id else set())
        stuck_vms = Vm.objects.filter(pk__in=vm_ids, status__in=stuck)
        for vm in stuck_vms.select_related("node", "template", "env"):
            _settle(vm)  # what the engine reports, else error
    if op.snapshot_id:
        if op.kind == K.SNAPSHOT_CREATE:
            Snapshot.objects.filter(pk=op.snapshot_id, status=Snapshot.Status.CREATING).delete()
        else:
            Snapshot.objects.filter(
                pk=op.snapshot_id, status__in=[Snapshot.Status.APPLYING, Snapshot.Status.DESTROYING]
            ).update(status=Snapshot.Status.READY)
    if op.kind in (K.VM_SET_PORTS, K.VM_SET_BLACKLIST, K.ENV_DENY_OUTGOING):
        state.release_network(set(op.params.get("vm_ids", [])) | ({op.vm_id} if op.vm_id else set()))
    if op.kind in (K.ENV_DESTROY, K.ENV_EXPIRE):
        # Back to active so the owner, an operator or the next sweep can retry.
        Env.objects.filter(pk=op.env_id, status=Env.Status.DESTROYING).update(status=Env.Status.ACTIVE)
