"""Task bodies of VM and snapshot operations, each beside the settle that undoes its claims.

Every `run` here is safe to run again after a crash at any point: it reads what
the database says was done (a VM's status moves one step at a time) and the
engine's calls are idempotent (an existing image, domain or snapshot is
reused, a running VM is not started twice). Every `settle` leaves the VMs and
snapshots the operation claimed in a state an action is allowed from, as the
engine really has them. No transaction is held while the engine works.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from django.db import transaction
from django.utils import timezone

from engines.errors import EngineError, ErrorCode, TTError, fails_as
from engines.specs import PortSpec, PowerState, SnapshotSpec, StartOutcome
from nodes.registry import get_engine
from operations.models import Operation
from operations.registry import Progress, Step
from vms import allocation, disk_bases, spare_restore, state, together
from vms.kinds import VmKind
from vms.models import PortMapping, Snapshot, Vm
from vms.state import VmAction

log = logging.getLogger(__name__)

_STATUS_OF_POWER = {PowerState.RUNNING: Vm.Status.RUNNING, PowerState.STOPPED: Vm.Status.STOPPED,
                    PowerState.SUSPENDED: Vm.Status.SUSPENDED}


# --- the VMs of an operation ---------------------------------------------------


def vms_of(op: Operation):
    return Vm.objects.filter(pk__in=op.vm_ids).select_related("node", "template", "env").order_by("pk")


def each_vm(op: Operation, progress: Progress, work: Callable[[Vm, Progress], None]) -> None:
    """`work(vm, progress)` on each VM of the operation, going on past a VM that fails;
    then raise the first failure (its code is the operation's)."""
    vms = list(vms_of(op))
    failures: list[tuple[str, TTError]] = []
    for n, vm in enumerate(vms):
        def share(pct: int, msg: str, n: int = n, vm: Vm = vm) -> None:
            progress(int((n + pct / 100) * 100 / len(vms)), f"{vm.name}: {msg}")

        try:
            work(vm, share)
        except TTError as exc:
            failures.append((vm.name, exc))
            share(100, f"failed: {exc}")
    raise_failures(op, len(vms), failures)


def each_vm_together(op: Operation, progress: Progress, first: Callable[[Vm], together.Stage | None]) -> None:
    """Each VM's chain of engine stages from `first(vm)`, the VMs side by side where their
    engine allows (vms/together.py), going on past a VM that fails; then raise the first
    failure, as each_vm does."""
    vms = list(vms_of(op))
    raise_failures(op, len(vms), together.run(vms, first, together.shares_of(vms, progress)))


def raise_failures(op: Operation, total: int, failures: list[tuple[str, TTError]]) -> None:
    """The first failure of an operation's VMs, in their order (its code is the operation's)."""
    if failures and not op.params.get("vm_ids"):
        raise failures[0][1]  # an operation on one VM fails as that VM did
    if failures:
        name, first = failures[0]
        raise EngineError(f"{len(failures)} of {total} VMs failed; {name}: {first}", code=first.code)


def real_status(vm: Vm) -> str:
    """The status the engine's power state implies; error when it has no such VM or
    cannot be asked."""
    try:
        power = get_engine(vm.node).power_state(vm.to_spec())
    except Exception:
        log.exception("could not read the power state of %s", vm)
        return Vm.Status.ERROR
    return _STATUS_OF_POWER.get(power, Vm.Status.ERROR)


def settle_vm(vm: Vm, *claimed: str) -> None:
    """A VM still in one of the `claimed` statuses takes the one the engine reports."""
    vm.refresh_from_db(fields=["status"])
    if vm.status in claimed:
        Vm.objects.filter(pk=vm.pk, status=vm.status).update(status=real_status(vm))


def thaw(vm: Vm) -> None:
    """Best effort: the guest's filesystems thawed."""
    try:
        get_engine(vm.node).thaw_guest(vm.to_spec())
    except Exception:
        log.exception("could not thaw the filesystems of %s", vm)


def start_again_if_it_ran(vm: Vm, was: str) -> None:
    """Best effort after a failed storage change: a VM that ran before runs again."""
    if was != Vm.Status.RUNNING:
        return
    try:
        engine = get_engine(vm.node)
        if engine.power_state(vm.to_spec()) == PowerState.STOPPED:
            engine.start_vm(vm.to_spec())
    except Exception:
        log.exception("could not start %s again after a failed operation", vm)


# --- create -----------------------------------------------------------------------


def create_vm(vm: Vm, *, start: bool, progress: Progress) -> None:
    """creating -> (image, definition, network) -> stopped or starting -> running."""
    together.run_one(creation(vm, start=start), progress)


def creation(vm: Vm, *, start: bool) -> together.Stage | None:
    """What is left of making `vm`, from the status it is in (a retried operation resumes
    there): the engine's image, definition and network, then the boot; None when nothing is."""
    if vm.status != Vm.Status.CREATING:
        return powering(vm, VmAction.START)  # None unless it is still to be booted
    engine, spec = get_engine(vm.node), vm.to_spec()

    def created(image: str, progress: Progress) -> together.Stage | None:
        meta = spec.replace(runtime_image=image).to_meta()
        # One write: between "created" and "booting" no other action can slip in.
        Vm.objects.filter(pk=vm.pk, status=Vm.Status.CREATING).update(
            runtime_image=image, latest_meta=meta, status=Vm.Status.STARTING if start else Vm.Status.STOPPED
        )
        vm.refresh_from_db()
        return powering(vm, VmAction.START)

    # engine.create_vm undoes its own part on failure.
    return together.Stage(work=lambda progress: engine.create_vm(spec, progress), then=created)


def create_vms(op: Operation, progress: Progress) -> None:
    """Warm VMs (spares taken by the request: vms/warm.py) are rewired and restored together
    first; then every other VM, and each spare that will not restore (discarded, it boots
    cold), is created and booted, the VMs side by side (vms/together.py)."""
    start = op.params.get("start", True)
    restored = spare_restore.restore_spares(op, start=start)
    vms = list(vms_of(op))
    shares = together.shares_of(vms, progress)

    def first(vm: Vm) -> together.Stage | None:
        share = shares[vm.pk]
        if vm.pk in restored and spare_restore.record_spare_restore(
                vm, restored[vm.pk], start=start, progress=share):
            return None
        stage = together.ending_with(creation(vm, start=start), lambda progress: log_cold_start(vm, progress))
        if stage is None:  # a retried operation that had made it already
            log_cold_start(vm, share)
        return stage

    raise_failures(op, len(vms), together.run(vms, first, shares))


def log_cold_start(vm: Vm, progress: Progress) -> None:
    """The log's last word on a VM booted (or created) from the template, not from a spare."""
    vm.refresh_from_db(fields=["status"])
    if vm.start_kind == Vm.StartKind.COLD and vm.status in (Vm.Status.RUNNING, Vm.Status.STOPPED):
        booted = vm.status == Vm.Status.RUNNING
        progress(100, "cold: booted from the template" if booted else "cold: created")


def roll_back_creation(vm: Vm) -> None:
    """A VM that never finished being created leaves nothing behind: engine objects,
    addresses and ports go, and the row says destroyed. If the engine cannot be
    reached its row says error, to be destroyed again later."""
    try:
        get_engine(vm.node).destroy_vm(vm.to_spec())
    except Exception:
        log.exception("could not remove what the failed creation of %s left on its node", vm)
        Vm.objects.filter(pk=vm.pk, status=Vm.Status.CREATING).update(status=Vm.Status.ERROR)
        return
    with transaction.atomic():
        if Vm.objects.filter(pk=vm.pk, status=Vm.Status.CREATING).update(
            status=Vm.Status.DESTROYED, destroyed_at=timezone.now()
        ):
            allocation.release(vm)
    disk_bases.release(vm.disk_base_id)


def settle_created(op: Operation) -> None:
    for vm in vms_of(op):
        if vm.status == Vm.Status.CREATING:
            roll_back_creation(vm)
        else:
            settle_vm(vm, Vm.Status.STARTING, Vm.Status.SUSPENDING)


# --- power --------------------------------------------------------------------------

_POWER = {
    VmAction.START: (Vm.Status.STARTING, Vm.Status.RUNNING, ErrorCode.START_VM, "booting"),
    VmAction.STOP: (Vm.Status.STOPPING, Vm.Status.STOPPED, ErrorCode.STOP_VM, "shutting down"),
    VmAction.SUSPEND: (Vm.Status.SUSPENDING, Vm.Status.SUSPENDED, ErrorCode.SUSPEND_VM, "saving its memory"),
}


def power(vm: Vm, action: VmAction, progress: Progress) -> None:
    """Start, stop or suspend a VM claimed for it; a VM already past that status is left alone."""
    together.run_one(powering(vm, action), progress)


def powering(vm: Vm, action: VmAction) -> together.Stage | None:
    """The engine's part of a power action and its record; None for a VM already past it."""
    transient, final, code, doing = _POWER[action]
    if vm.status != transient:
        return None
    engine, spec = get_engine(vm.node), vm.to_spec()

    def work(progress: Progress) -> str:
        progress(50, doing)
        with fails_as(code):
            return _power_on_engine(engine, spec, action)

    def done(said: str, progress: Progress) -> None:
        progress(90, said)
        Vm.objects.filter(pk=vm.pk, status=transient).update(status=final)

    return together.Stage(work=work, then=done)


def _power_on_engine(engine, spec, action: VmAction) -> str:
    """What the engine did, for the operation's log."""
    if action == VmAction.START:
        # Only an engine that saves memory (Feature.SUSPEND) says what its start did.
        resumed = engine.start_vm(spec) in (StartOutcome.RESTORED, StartOutcome.RESUMED)
        return "VM resumed from its saved memory" if resumed else "VM booted"
    if action == VmAction.SUSPEND:
        return f"VM {engine.suspend_vm(spec)}"
    return f"VM {engine.stop_vm(spec)}"  # by its agent, the ACPI button, or forced


def stop_for_disk(op: Operation, progress: Progress) -> None:
    """The disk watchdog's stop: forced (a graceful one would let it write on for the
    stop timeout), then the operation fails as disk_exceeded, which tells the owner."""
    vm = vms_of(op).get()
    used, disk = op.params.get("used_mb"), op.params.get("disk_mb")
    if vm.status == Vm.Status.STOPPING:
        progress(20, f"its writable storage holds {used} MiB, past its disk of {disk} MiB: stopping it")
        with fails_as(ErrorCode.STOP_VM):
            said = get_engine(vm.node).stop_vm(vm.to_spec(), force=True)
        Vm.objects.filter(pk=vm.pk, status=Vm.Status.STOPPING).update(status=Vm.Status.STOPPED)
        progress(90, f"VM {said}")
    raise TTError(f"VM {vm.name} was stopped: it wrote {used} MiB, past its disk of {disk} MiB. Start it "
                  f"and delete files at once, or it is stopped again at the next check",
                  code=ErrorCode.DISK_EXCEEDED)


def power_vms(op: Operation, progress: Progress, action: VmAction) -> None:
    """Starts run side by side (vms/together.py): a cold boot is mostly the engine's waiting.
    Stops and suspends run one VM after another."""
    if action == VmAction.START:
        each_vm_together(op, progress, lambda vm: powering(vm, action))
    else:
        each_vm(op, progress, lambda vm, share: power(vm, action, share))


def settle_power(op: Operation) -> None:
    for vm in vms_of(op):
        settle_vm(vm, Vm.Status.STARTING, Vm.Status.STOPPING, Vm.Status.SUSPENDING)


# --- destroy --------------------------------------------------------------------------


def destroy_vm(vm: Vm, progress: Progress) -> None:
    """Remove the VM from its engine and give back everything it held."""
    if vm.status == Vm.Status.DESTROYED:
        return
    get_engine(vm.node).destroy_vm(vm.to_spec(), progress)
    with transaction.atomic():
        allocation.release(vm)
        Snapshot.objects.filter(vm=vm).delete()
        Vm.objects.filter(pk=vm.pk).update(status=Vm.Status.DESTROYED, destroyed_at=timezone.now())
    disk_bases.release(vm.disk_base_id)  # the disk it was cloned from, or cut from its own, if its last user


def destroy_vms(op: Operation, progress: Progress) -> None:
    each_vm(op, progress, destroy_vm)


def settle_destroyed(op: Operation) -> None:
    # What the engine still has: running or stopped, or error when half gone.
    # From there the VM can be destroyed again.
    for vm in vms_of(op):
        settle_vm(vm, Vm.Status.DESTROYING)


# --- network ---------------------------------------------------------------------------


def _set_blacklist(op: Operation, progress: Progress) -> None:
    vm = vms_of(op).get()
    new = vm.to_spec()
    old = new.replace(blacklist=tuple(op.params.get("previous", [])))
    progress(50, f"blacklist: {', '.join(vm.net_blacklist) or 'empty'}")
    with fails_as(ErrorCode.NET_BLACKLIST):
        get_engine(vm.node).set_blacklist(new, previous=old)
    state.release_network([vm.pk])


def _revert_blacklist(op: Operation) -> None:
    vm = vms_of(op).get()
    Vm.objects.filter(pk=vm.pk).update(net_blacklist=op.params.get("previous", []))
    vm.refresh_from_db()
    resync_network(vm)
    state.release_network([vm.pk])


def _previous_ports(op: Operation) -> list[PortSpec]:
    return [PortSpec(proto, inner, public) for proto, inner, public in op.params.get("previous", [])]


def _set_ports(op: Operation, progress: Progress) -> None:
    vm = vms_of(op).get()
    new = vm.to_spec()
    progress(50, "updating port map")
    with fails_as(ErrorCode.FIREWALL_SET_NET):
        get_engine(vm.node).set_net(new, previous=new.replace(ports=tuple(_previous_ports(op))))
    state.release_network([vm.pk])


def _revert_ports(op: Operation) -> None:
    vm = vms_of(op).get()
    with transaction.atomic():
        PortMapping.objects.filter(vm=vm).delete()
        for p in _previous_ports(op):
            PortMapping.objects.create(vm=vm, node=vm.node, protocol=p.protocol,
                                       inner_port=p.inner_port, public_port=p.public_port)
    resync_network(vm)
    state.release_network([vm.pk])


def resync_network(vm: Vm) -> None:
    """Make the node's wiring of `vm` what the database says, whatever is installed
    (after a failure nobody knows how far a change got). Best effort."""
    try:
        get_engine(vm.node).resync_net(vm.to_spec())
    except Exception:
        log.exception("could not rewrite the network of %s; reconciliation will", vm)


# --- snapshots ------------------------------------------------------------------------------


def _snapshot_of(op: Operation) -> Snapshot | None:
    return Snapshot.objects.filter(pk=op.snapshot_id).first()


def snapshot_spec(snapshot: Snapshot) -> SnapshotSpec:
    return SnapshotSpec(name=snapshot.name, path=snapshot.path or snapshot.name, meta=snapshot.meta)


def _was_running(op: Operation) -> bool:
    return op.params.get("previous_status") == Vm.Status.RUNNING


def _create_snapshot(op: Operation, progress: Progress) -> None:
    vm = vms_of(op).get()
    snapshot = _snapshot_of(op)
    if snapshot is not None and snapshot.status == Snapshot.Status.CREATING:
        result = get_engine(vm.node).create_snapshot(
            vm.to_spec(), snapshot.name, progress, running_after=_was_running(op)
        )
        Snapshot.objects.filter(pk=snapshot.pk).update(
            status=Snapshot.Status.READY, path=result.path, meta=result.meta
        )
    settle_vm(vm, Vm.Status.SNAPSHOTTING)


def remove_half_made(snapshot: Snapshot) -> bool:
    """Take a snapshot that never finished out of the VM's image; False if the node
    could not be asked (it is logged)."""
    vm = snapshot.vm
    try:
        get_engine(vm.node).destroy_snapshot(vm.to_spec(), snapshot_spec(snapshot))
    except Exception:
        log.exception("could not remove the half-made snapshot %s", snapshot)
        return False
    return True


def _settle_snapshot_create(op: Operation) -> None:
    vm = vms_of(op).get()
    snapshot = _snapshot_of(op)
    if snapshot is not None and snapshot.status == Snapshot.Status.CREATING:
        remove_half_made(snapshot)  # a half-made snapshot must not stay in the image
        snapshot.delete()
    if vm.status == Vm.Status.SNAPSHOTTING:
        thaw(vm)  # a live snapshot cut short must not leave the guest's filesystems frozen
        start_again_if_it_ran(vm, op.params.get("previous_status", ""))
    settle_vm(vm, Vm.Status.SNAPSHOTTING)


def _apply_snapshot(op: Operation, progress: Progress) -> None:
    vm = vms_of(op).get()
    snapshot = _snapshot_of(op)
    if snapshot is not None and snapshot.status == Snapshot.Status.APPLYING:
        restored = get_engine(vm.node).apply_snapshot(
            vm.to_spec(), snapshot_spec(snapshot), progress, running_after=_was_running(op)
        )
        with transaction.atomic():
            Vm.objects.filter(pk=vm.pk).update(
                cpu_num=restored.cpu_num, mem_mb=restored.mem_mb, disk_mb=restored.disk_mb,
                latest_meta=restored.to_meta(),
            )
            Snapshot.objects.filter(pk=snapshot.pk).update(status=Snapshot.Status.READY)
    settle_vm(vm, Vm.Status.RESTORING)


def _settle_snapshot_apply(op: Operation) -> None:
    vm = vms_of(op).get()
    Snapshot.objects.filter(pk=op.snapshot_id, status=Snapshot.Status.APPLYING).update(
        status=Snapshot.Status.READY
    )
    if vm.status == Vm.Status.RESTORING:
        start_again_if_it_ran(vm, op.params.get("previous_status", ""))
    settle_vm(vm, Vm.Status.RESTORING)


def _destroy_snapshot(op: Operation, progress: Progress) -> None:
    snapshot = _snapshot_of(op)
    if snapshot is None:
        return  # gone already: an earlier attempt got to the end
    vm = vms_of(op).get()
    progress(50, f"removing snapshot {snapshot.name}")
    get_engine(vm.node).destroy_snapshot(vm.to_spec(), snapshot_spec(snapshot))
    snapshot.delete()


def _settle_snapshot_destroy(op: Operation) -> None:
    """A snapshot destroy that failed: the snapshot is kept, ready, to be destroyed again."""
    Snapshot.objects.filter(pk=op.snapshot_id, status=Snapshot.Status.DESTROYING).update(
        status=Snapshot.Status.READY
    )


CREATE = Step(run=create_vms, settle=settle_created)
SNAPSHOT_DESTROY = Step(run=_destroy_snapshot, settle=_settle_snapshot_destroy)

STEPS: dict[str, Step] = {
    VmKind.VM_ADD: CREATE,
    VmKind.VM_START: Step(run=partial(power_vms, action=VmAction.START), settle=settle_power),
    VmKind.VM_STOP: Step(run=partial(power_vms, action=VmAction.STOP), settle=settle_power),
    VmKind.VM_SUSPEND: Step(run=partial(power_vms, action=VmAction.SUSPEND), settle=settle_power),
    VmKind.VM_DISK_STOP: Step(run=stop_for_disk, settle=settle_power),
    VmKind.VM_DESTROY: Step(run=destroy_vms, settle=settle_destroyed),
    VmKind.VM_SET_BLACKLIST: Step(run=_set_blacklist, settle=_revert_blacklist),
    VmKind.VM_SET_PORTS: Step(run=_set_ports, settle=_revert_ports),
    VmKind.SNAPSHOT_CREATE: Step(run=_create_snapshot, settle=_settle_snapshot_create),
    VmKind.SNAPSHOT_APPLY: Step(run=_apply_snapshot, settle=_settle_snapshot_apply),
    VmKind.SNAPSHOT_DESTROY: SNAPSHOT_DESTROY,
    VmKind.SNAPSHOT_EXPIRE: SNAPSHOT_DESTROY,
}
