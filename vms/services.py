"""VM and snapshot actions. Every interface (portal, API, admin, tasks) calls these.

Each verb checks permission, validates, claims the VM's status, applies the
Env's management cooldown where it applies, and records the Operation; its task
is dispatched on commit and runs the step of its kind (vms/steps.py). No engine
is called here.
"""

from __future__ import annotations

import uuid as uuidlib
from datetime import timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import SshKey
from accounts.quotas import Usage
from audit.recording import audited
from engines.specs import Feature
from nodes.models import Node
from nodes.registry import driver_class
from operations import recovery, registry
from operations.models import Operation
from operations.recording import expire_each, idempotent, record
from ttportal import limits
from ttportal.errors import ConflictingInput, IllegalState, InvalidInput, Unsupported
from vms import allocation, env_wake, policy, state, usage, warm
from vms.kinds import VmKind
from vms.models import CLOUD_INIT, PortMapping, Snapshot, Vm
from vms.new_vms import (
    NewVm,
    check_name,
    int_in,
    parse_blacklist,
    parse_ports,
    validate_new_vm,
    wanted_features,
)
from vms.placement import Ask, Placer, check_disk_room
from vms.state import VmAction


def _locked_env(env):
    """The Env row (an envs.Env, reached through vm.env: vms never imports envs), locked."""
    return type(env).objects.select_for_update().get(pk=env.pk)


def _require_feature(vm: Vm, feature: Feature) -> None:
    if feature not in driver_class(vm.node.kind).features:
        raise Unsupported(f"the {vm.node.kind} engine of node {vm.node.name} cannot {feature}")


# --- creating VMs -------------------------------------------------------------


class Checked(NamedTuple):
    """A new VM as checked: the clean request, its ports, its node, and the warm spare it
    will take there (vms/warm.py), if any."""

    clean: NewVm
    ports: list[tuple[str, int]]
    node: Node
    spare: Vm | None = None


def ports_of(checked: list[Checked]) -> int:
    """The public ports these new VMs take (what they add to the owner's port quota)."""
    return sum(len(c.ports) for c in checked)


def check_vms(env, specs: list[NewVm], *, field: str = "vms") -> list[Checked]:
    """Validate new VMs for the Env and pick their nodes; nothing is written.

    `field` is how the request names them: "vms" (a list, so errors say
    `vms[1].name`) or "" (one VM, the fields named bare).
    """
    on = list(env.vms.live().values_list("name", "node_id")) if env.pk else []
    live = len(on)
    if live + len(specs) > settings.TT_MAX_VMS_PER_ENV:
        if field == "vms":  # the request's own list is too long (the schema's maxItems)
            raise InvalidInput(field, f"an Env holds at most {settings.TT_MAX_VMS_PER_ENV} VMs")
        raise IllegalState(f"an Env holds at most {settings.TT_MAX_VMS_PER_ENV} VMs, "
                           f"and {env.name} has {live}")
    checked = []
    names = {name for name, _ in on}
    # Nodes are picked before any VM is saved: the placer counts what this request
    # already placed (or a many-VM request would overcommit a node) and keeps the
    # Env on the node(s) it is on while they have room.
    placer = Placer(env_nodes={node_id for _, node_id in on})
    taken: set[int] = set()
    for i, spec in enumerate(specs):
        prefix = f"{field}[{i}]" if field else ""
        at = lambda name, prefix=prefix: f"{prefix}.{name}" if prefix else name  # noqa: E731
        clean, template, ports = validate_new_vm(spec, prefix)
        if clean.name in names:
            raise ConflictingInput(at("name"), f"this Env already has a VM named {clean.name}")
        names.add(clean.name)
        wanted = wanted_features(clean.net_kind, rand_uuid=clean.rand_uuid, keep_image=clean.keep_image,
                                 disk_mb=clean.disk_mb, template=template)
        ask = Ask.of(template, clean.cpu_num, clean.mem_mb, wanted, ports, disk_mb=clean.disk_mb)
        spare = warm.spare_for(placer, ask, clean, taken)
        if spare is not None:
            taken.add(spare.pk)
            checked.append(Checked(clean, ports, spare.node, spare))
            continue
        node = placer.place(ask, at("template"), feature_fields={Feature.DISK_LIMIT: at("disk_mb")})
        checked.append(Checked(clean, ports, node))
    return checked


def insert_vms(env, checked: list[Checked]) -> list[Vm]:
    """Insert checked VMs (status creating) with addresses and ports, or move the warm spares
    they take into the Env (status starting). Inside a transaction."""
    vms, wanted = [], []
    for clean, ports, node, spare in checked:
        template = clean.template
        vm = warm.adopt(spare, env=env, clean=clean) if spare is not None else None
        if vm is not None:
            wanted.append((vm, ports))
            vms.append(vm)
            continue
        vm = Vm(
            env=env, node=node, template=template, name=clean.name, status=Vm.Status.CREATING,
            net_kind=clean.net_kind, cpu_num=clean.cpu_num, mem_mb=clean.mem_mb, disk_mb=clean.disk_mb,
            keep_image=clean.keep_image, rand_uuid=clean.rand_uuid,
            uuid=str(uuidlib.uuid4()) if clean.rand_uuid else "",
            features=list(template.features or []),
            user_data=clean.user_data,
            ssh_keys=SshKey.lines_of(env.owner) if CLOUD_INIT in (template.features or []) else [],
        )
        allocation.save_with_address(vm)
        wanted.append((vm, ports))
        vms.append(vm)
    # Every VM's ports at once: a few queries per node, however many VMs and ports.
    allocation.allocate_ports_of(wanted)
    return vms


def build_vms(env, specs: list[NewVm], *, field: str = "vms") -> list[Vm]:
    """check_vms, then insert_vms: new VMs of an Env that takes them without a cooldown."""
    return insert_vms(env, check_vms(env, specs, field=field))


@audited("vm.add")
@idempotent
def vm_add(*, env, spec: NewVm, by, ignore_quota: bool = False, idempotency_key: str = "") -> Operation:
    """Add one VM to a live Env: created, then booted, by a task.

    The request is checked whole before the cooldown is: bad input is told as such,
    not as "retry in N s" (and retrying it would not help). Then the owner's quota
    (live VMs, vCPUs, memory, disk, forwarded ports), which staff may say to ignore (recorded)."""
    policy.check_can_manage(by, env, "vm_add")
    owner = env.owner
    allowed = usage.admit(owner, by=by, ignore_quota=ignore_quota)  # the owner's row, before the Env's
    env = _locked_env(env)
    policy.check_live(env)
    checked = check_vms(env, [spec], field="")
    usage.check_adds(owner, allowed, Usage.of_vms([c.clean for c in checked], ports=ports_of(checked)))
    policy.claim_mgmt_slot(env, timezone.now(), by=by)
    (vm,) = insert_vms(env, checked)
    params = {"vm_ids": [vm.pk], "start": not env.is_stopped}
    return record(VmKind.VM_ADD, env=env, vm=vm, by=by, idempotency_key=idempotency_key,
                  params=params if allowed is not None else {**params, "ignore_quota": True})


# --- power --------------------------------------------------------------------


# The status a power action leaves a VM in: asking for it again changes nothing.
POWER_TARGET = {VmAction.START: Vm.Status.RUNNING, VmAction.STOP: Vm.Status.STOPPED,
                VmAction.SUSPEND: Vm.Status.SUSPENDED}
POWER_FEATURE = {VmAction.START: Feature.START_STOP, VmAction.STOP: Feature.START_STOP,
                 VmAction.SUSPEND: Feature.SUSPEND}


def _vm_power_request(vm: Vm, action: VmAction, kind: str, by, idempotency_key: str) -> Operation | None:
    policy.check_can_manage(by, vm.env, f"vm_{action}")
    _require_feature(vm, POWER_FEATURE[action])
    env = _locked_env(vm.env)
    policy.check_live(env)
    vm.refresh_from_db(fields=["status", "asleep_at"])
    if action == VmAction.START and vm.asleep_at is not None:
        # A VM of a sleeping Env: the whole Env wakes, its ports lead to its VMs again
        # (as env_start does; starting this one alone would leave them at the waker).
        who = by.get_username() if by else "the system"
        return env_wake.wake_env(vm.env_id, why=f"VM {vm.name} started by {who}")
    if vm.status == POWER_TARGET[action]:
        return None  # nothing to do: no operation, no cooldown
    if vm.status == Vm.Status.DESTROYED:
        raise IllegalState(f"VM {vm.name} is destroyed")
    if action == VmAction.SUSPEND and state.allowed(vm.status, action):
        # Its memory is written to the node's disk, all of it, at once.
        check_disk_room(vm.node, more_mb=vm.mem_mb, now_mb=vm.mem_mb,
                        what=f"the saved memory of VM {vm.name} ({vm.mem_mb} MiB)")
    policy.claim_mgmt_slot(env, timezone.now(), by=by)
    state.claim(vm, action)
    return record(kind, env=env, vm=vm, by=by, idempotency_key=idempotency_key)


@audited("vm.start")
@idempotent
def vm_start(*, vm: Vm, by, idempotency_key: str = "") -> Operation | None:
    """Start the VM; None when it is running already (nothing recorded)."""
    return _vm_power_request(vm, VmAction.START, VmKind.VM_START, by, idempotency_key)


@audited("vm.stop")
@idempotent
def vm_stop(*, vm: Vm, by, idempotency_key: str = "") -> Operation | None:
    """Stop the VM; None when it is stopped already (nothing recorded)."""
    return _vm_power_request(vm, VmAction.STOP, VmKind.VM_STOP, by, idempotency_key)


@audited("vm.suspend")
@idempotent
def vm_suspend(*, vm: Vm, by, idempotency_key: str = "") -> Operation | None:
    """Save the running VM's memory to its node's disk and stop it; the next start resumes
    it where it was (processes, files in memory). None when it is suspended already."""
    return _vm_power_request(vm, VmAction.SUSPEND, VmKind.VM_SUSPEND, by, idempotency_key)


@audited("vm.disk_stop", skip_none=True)
def vm_stop_for_disk(*, vm: Vm, used_mb: int) -> Operation | None:
    """The disk watchdog's (vms/disk_watch.py): stop a running VM whose writable storage
    holds `used_mb` MiB, past its disk. The site acts: no permission, no cooldown. None
    when it is no longer stoppable (an operation holds it, or it stopped meanwhile)."""
    with transaction.atomic():
        env = _locked_env(vm.env)
        try:
            state.claim(vm, VmAction.STOP)
        except IllegalState:
            return None
        return record(VmKind.VM_DISK_STOP, env=env, vm=vm, by=None,
                      params={"used_mb": used_mb, "disk_mb": vm.disk_mb})


# --- destroy ------------------------------------------------------------------




def claim_for_destroy(env, vms: list[Vm], *, by) -> list[int]:
    """Claim these VMs of the (locked) Env for a destroy; returns their ids.

    Operations on the Env that no live worker holds (a crashed worker's, or a
    task lost with its cluster) are taken over first, so a destroy is the way
    out of anything stuck. A VM a live operation still holds refuses the whole
    destroy; every other VM is claimed from whatever status it is in.
    """
    who = by.get_username() if by is not None else "the expiry sweep"
    live = recovery.take_over_stuck(env, why=f"{who} destroys it")
    if any(op.kind in registry.kinds_tagged(registry.DESTROYS_ENV) for op in live):
        raise IllegalState(f"Env {env.name} is being destroyed already")
    held = {pk for op in live for pk in op.vm_ids}
    busy = sorted(vm.name for vm in vms if vm.pk in held)
    if busy:
        raise IllegalState(f"VMs still busy: {', '.join(busy)}; retry when their operations finish")
    ids = [vm.pk for vm in vms]
    Vm.objects.filter(pk__in=ids).exclude(status=Vm.Status.DESTROYED).update(status=Vm.Status.DESTROYING)
    return ids


@audited("vm.destroy")
@idempotent
def vm_destroy(*, vm: Vm, by, idempotency_key: str = "") -> Operation:
    policy.check_can_manage(by, vm.env, "vm_destroy")
    env = _locked_env(vm.env)
    if env.status == env.Status.DESTROYED:
        raise IllegalState(f"Env {env.name} is destroyed")
    vm.refresh_from_db(fields=["status"])
    if vm.status == Vm.Status.DESTROYED:
        raise IllegalState(f"VM {vm.name} is destroyed")
    policy.claim_mgmt_slot(env, timezone.now(), by=by)
    claim_for_destroy(env, [vm], by=by)
    return record(VmKind.VM_DESTROY, env=env, vm=vm, by=by, idempotency_key=idempotency_key)


# --- network ------------------------------------------------------------------


@audited("vm.blacklist")
@idempotent
def vm_set_blacklist(*, vm: Vm, addresses, by, idempotency_key: str = "") -> Operation | None:
    """Make the VM unable to reach exactly these addresses (an empty list clears it).
    None when it is so already (nothing recorded)."""
    policy.check_can_manage(by, vm.env, "vm_set_blacklist")
    blacklist = parse_blacklist(addresses, "addresses")  # named as the parameter and the forms
    policy.check_live(vm.env)
    vm.refresh_from_db(fields=["net_blacklist"])  # the caller's copy may predate the last change
    previous = list(vm.net_blacklist or [])
    if sorted(previous) == sorted(blacklist):
        return None
    state.claim_network(vm)
    Vm.objects.filter(pk=vm.pk).update(net_blacklist=blacklist)
    return record(VmKind.VM_SET_BLACKLIST, env=vm.env, vm=vm, by=by, idempotency_key=idempotency_key,
                  params={"previous": previous, "blacklist": blacklist})


@audited("vm.ports")
@idempotent
def vm_set_ports(*, vm: Vm, ports, by, ignore_quota: bool = False,
                 idempotency_key: str = "") -> Operation | None:
    """Make the VM's forwarded inner ports exactly `ports`; kept ones keep their public port.
    None when they are so already (nothing recorded). More ports than the VM has are
    bound by the owner's port quota, which staff may say to ignore (recorded)."""
    policy.check_can_manage(by, vm.env, "vm_set_ports")
    wanted = parse_ports(ports, "ports")
    if vm.net_kind == Vm.NetKind.FLAT and wanted:
        raise ConflictingInput("ports", "FLAT VMs are reached at their own address and have no port map")
    owner = vm.env.owner
    allowed = usage.admit(owner, by=by, ignore_quota=ignore_quota)  # the owner's row, counted after
    policy.check_live(vm.env)
    current = {(p.protocol, p.inner_port): p for p in vm.port_mappings.all()}
    if set(current) == set(wanted):
        return None
    # Counted net: a request that swaps ports, or drops some, asks for no more.
    usage.check_adds(owner, allowed, Usage(ports=len(wanted) - len(current)))
    state.claim_network(vm)
    previous = [[p.protocol, p.inner_port, p.public_port] for p in current.values()]
    gone = [mapping.pk for key, mapping in current.items() if key not in wanted]
    PortMapping.objects.filter(pk__in=gone).delete()
    allocation.allocate_ports(vm, [key for key in wanted if key not in current])
    params = {"previous": previous, "ports": [list(p) for p in wanted]}
    return record(VmKind.VM_SET_PORTS, env=vm.env, vm=vm, by=by, idempotency_key=idempotency_key,
                  params=params if allowed is not None else {**params, "ignore_quota": True})


# --- snapshots ----------------------------------------------------------------


def _check_life_time(life_time) -> int | None:
    """Seconds the snapshot lives (None: kept until destroyed)."""
    if life_time is None:
        return None
    return int_in(life_time, "life_time", limits.SNAPSHOT_LIFE_MIN, limits.SNAPSHOT_LIFE_MAX, "seconds")


@audited("snapshot.create")
@idempotent
def snapshot_create(*, vm: Vm, name: str, by, life_time=None, ignore_quota: bool = False,
                    idempotency_key: str = "") -> Operation:
    """Snapshot the VM (stopped for consistency, then back to its power state). Bound by the
    owner's snapshot quota, which staff may say to ignore (recorded)."""
    policy.check_can_manage(by, vm.env, "snapshot_create")
    check_name(name, "name")
    seconds = _check_life_time(life_time)
    _require_feature(vm, Feature.SNAPSHOT)
    if vm.snapshots.filter(name=name).exists():
        raise ConflictingInput("name", f"VM {vm.name} already has a snapshot named {name}")
    owner = vm.env.owner
    allowed = usage.admit(owner, by=by, ignore_quota=ignore_quota)  # the owner's row, before the Env's
    env = _locked_env(vm.env)
    policy.check_live(env)
    usage.check_adds(owner, allowed, Usage(snapshots=1))
    # A snapshot may come to hold as much as the whole disk (counted so by placement).
    check_disk_room(vm.node, more_mb=vm.disk_mb, now_mb=0, what=f"a snapshot of VM {vm.name} "
                    f"(up to its disk, {vm.disk_mb} MiB)")
    now = timezone.now()
    policy.claim_mgmt_slot(env, now, by=by)
    previous = state.claim(vm, VmAction.SNAPSHOT)
    snapshot = Snapshot.objects.create(
        vm=vm, name=name, life_time=seconds, created_at=now,
        expires_at=now + timedelta(seconds=seconds) if seconds else None,
    )
    params = {"previous_status": previous}
    return record(VmKind.SNAPSHOT_CREATE, env=env, vm=vm, snapshot=snapshot, by=by,
                  idempotency_key=idempotency_key,
                  params=params if allowed is not None else {**params, "ignore_quota": True})


@audited("snapshot.apply")
@idempotent
def snapshot_apply(*, snapshot: Snapshot, by, idempotency_key: str = "") -> Operation:
    """Put the VM back to the snapshot: its disk and its config; power state as it was."""
    vm = snapshot.vm
    policy.check_can_manage(by, vm.env, "snapshot_apply")
    env = _locked_env(vm.env)
    policy.check_live(env)
    policy.claim_mgmt_slot(env, timezone.now(), by=by)
    if not Snapshot.objects.filter(pk=snapshot.pk, status=Snapshot.Status.READY).update(
        status=Snapshot.Status.APPLYING
    ):
        raise IllegalState(f"snapshot {snapshot.name} is {snapshot.status}, not ready")
    previous = state.claim(vm, VmAction.APPLY)
    return record(VmKind.SNAPSHOT_APPLY, env=env, vm=vm, snapshot=snapshot, by=by,
                  idempotency_key=idempotency_key, params={"previous_status": previous})


@audited("snapshot.destroy")
@idempotent
def snapshot_destroy(*, snapshot: Snapshot, by, idempotency_key: str = "",
                     kind: str = VmKind.SNAPSHOT_DESTROY) -> Operation:
    vm = snapshot.vm
    policy.check_can_manage(by, vm.env, "snapshot_destroy")
    if not Snapshot.objects.filter(pk=snapshot.pk, status=Snapshot.Status.READY).update(
        status=Snapshot.Status.DESTROYING
    ):
        snapshot.refresh_from_db(fields=["status"])
        raise IllegalState(f"snapshot {snapshot.name} is {snapshot.status}, not ready")
    return record(kind, env=vm.env, vm=vm, snapshot=snapshot, by=by, idempotency_key=idempotency_key,
                  target=f"{vm.env.name}/{vm.name}@{snapshot.name}")


def snapshot_expire_due(now=None, limit: int = 100) -> list[Operation]:
    """Queue the removal of snapshots whose life time has passed, one at a time."""
    now = now or timezone.now()
    due = Snapshot.objects.filter(status=Snapshot.Status.READY, expires_at__lte=now).order_by("expires_at")
    return expire_each(due.values_list("pk", flat=True), snapshot_expire_one, now, limit)


def snapshot_expire_one(snapshot_id: int, *, now=None) -> Operation | None:
    """One step of the sweep: expire this snapshot if it is still due and ready."""
    now = now or timezone.now()
    snapshot = Snapshot.objects.select_related("vm__env").filter(
        pk=snapshot_id, status=Snapshot.Status.READY, expires_at__lte=now
    ).first()
    if snapshot is None:
        return None
    try:
        return snapshot_destroy(snapshot=snapshot, by=None, kind=VmKind.SNAPSHOT_EXPIRE)
    except IllegalState:
        return None
