"""Clone an Env: new Envs of the same shape whose VMs start from the source's disks as they are now.

The service (env_clone, called by the API, the portal and the CLI through the API) checks
and claims at request time, as env_create does: the clones' Envs and VMs are written
(status creating, new names, MACs, IPs, UUIDs and public ports), the source's VMs claimed
(snapshotting), the owner's quota charged for every clone. Its operation then, for each
source VM, cuts its disk (VmEngine.cut_disk: the guest's filesystems frozen by its agent,
or the VM stopped; what it held becomes a read-only base, vms/disk_bases.py) and makes
each clone's overlay on that base, so a clone costs the same whatever the disk's size.
The source keeps running. A clone's guest takes a machine id of its own (VmSpec.machine_id)
and, with cloud-init, a new instance id (new host keys).
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts import quotas
from accounts.quotas import Usage
from audit.recording import audited
from engines.errors import ErrorCode, fails_as
from engines.specs import Feature
from envs.kinds import EnvKind
from envs.models import Env
from nodes.registry import driver_class, get_engine
from operations.models import Operation
from operations.recording import idempotent, record
from operations.registry import Progress
from ttportal.errors import ConflictingInput, IllegalState, NoCapacity, NotFound, Unsupported
from vms import disk_bases, policy, state, together, usage
from vms import steps as vm_steps
from vms.models import DiskBase, Snapshot, Vm
from vms.new_vms import NewVm, check_name, int_in, validate_new_vm, wanted_features
from vms.placement import Ask, Placer
from vms.services import Checked, insert_vms
from vms.state import VmAction

COUNT_MAX = 10  # clones made by one request


@audited("env.clone")
@idempotent
def env_clone(*, env: Env, by, count=1, name: str | None = None, lifetime=None,
              idempotency_key: str = "") -> Operation:
    """`count` new Envs owned by `by`, each with a clone of every VM of `env` (which `by` may
    see). Named `name` (one clone) or `<name>-<n>`; `name` defaults to `<source>-clone`.
    Returns the operation, on the source Env; its params list the clones' Env ids."""
    from envs.services import _end_from, _quota_noted, _seconds  # one rule for an Env's end

    if not Env.objects.visible_to(by).filter(pk=env.pk).exists():
        raise NotFound("no such Env")
    policy.check_can_manage(by, env, "env_clone")  # a member: an admin of it
    policy.check(by, "env_create", owner_id=by.pk)
    count = int_in(count, "count", 1, COUNT_MAX)
    allowed = usage.admit(by, by=by)
    env = Env.objects.select_for_update().get(pk=env.pk)
    if env.status != Env.Status.ACTIVE or env.is_warm_pool:
        raise ConflictingInput("id", f"Env {env.name} is {env.status}: only a live Env can be cloned")
    sources = list(env.vms.live().select_related("node", "template", "disk_base").order_by("pk"))
    _check_sources(env, sources)
    names = _names(by, name if name not in (None, "") else f"{env.name}-clone", count, explicit=bool(name))
    now = timezone.now()
    if allowed is not None and lifetime is None and allowed["lifetime"]:
        lifetime = min(settings.TT_DEFAULT_ENV_LIFETIME, allowed["lifetime"])
    end = _end_from(now, lifetime=lifetime, start_at=now)
    used = usage.usage_of(by) if allowed is not None else None
    policy.claim_mgmt_slot(env, now, by=by)
    clones: dict[int, list[int]] = {vm.pk: [] for vm in sources}
    envs, new_vms = [], []
    for clone_name in names:
        clone = Env.objects.create(owner=by, name=clone_name, start_at=now, end_at=end,
                                   deny_outgoing=env.deny_outgoing, last_mgmt_at=now)
        checked = _checked(clone, sources)
        if allowed is not None and not envs:  # every clone is the same: charged once, times count
            quotas.check_lifetime(by, allowed, current=0, wanted=_seconds(end - now))
            one = Usage.of_vms([c.clean for c in checked] * count, envs=count,
                               ports=count * sum(len(c.ports) for c in checked))
            usage.check_adds(by, allowed, one, used=used)
        made = insert_vms(clone, checked)
        for source, vm in zip(sources, made, strict=True):
            Vm.objects.filter(pk=vm.pk).update(clone_of=source)
            clones[source.pk].append(vm.pk)
            new_vms.append(vm.pk)
        envs.append(clone.pk)
    previous = {}
    for vm in sources:
        previous[str(vm.pk)] = vm.status
        state.claim(vm, VmAction.SNAPSHOT)
    params = {"vm_ids": [vm.pk for vm in sources] + new_vms, "clone_vm_ids": new_vms,
              "clones": {str(k): v for k, v in clones.items()}, "previous": previous, "envs": envs,
              "names": names}
    return record(EnvKind.ENV_CLONE, env=env, by=by, idempotency_key=idempotency_key,
                  params=_quota_noted(params, allowed))


def _check_sources(env: Env, sources: list[Vm]) -> None:
    if not sources:
        raise ConflictingInput("id", f"Env {env.name} has no VM to clone")
    for vm in sources:
        if Feature.CLONE not in driver_class(vm.node.kind).features:
            raise Unsupported(f"VM {vm.name} runs on the {vm.node.kind} engine of node {vm.node.name}, "
                              f"which lacks the feature {Feature.CLONE} (cloning an Env)")
        if vm.status not in (Vm.Status.RUNNING, Vm.Status.STOPPED):
            raise IllegalState(f"VM {vm.name} is {vm.status}: an Env is cloned when each VM runs or is "
                               "stopped (start a suspended one first)")
        if vm.keep_image:
            raise ConflictingInput("id", f"VM {vm.name} keeps its image when destroyed (keep_image), "
                                   "so its disk cannot become a clone's base")
        if Snapshot.objects.filter(vm=vm).exists():
            raise ConflictingInput("id", f"VM {vm.name} has snapshots, which its disk's cut would leave "
                                   "behind it: destroy them first")


def _names(owner, base: str, count: int, *, explicit: bool) -> list[str]:
    """`base` itself for one clone named by the caller, else `<base>-<n>` with the lowest free n."""
    field = "name"
    check_name(base, field)
    taken = set(Env.objects.live().filter(owner=owner).values_list("name", flat=True))
    if explicit and count == 1:
        if base in taken:
            raise ConflictingInput(field, f"{owner.get_username()} already has a live Env named {base}")
        return [base]
    names, n = [], 1
    while len(names) < count:
        candidate = f"{base}-{n}"
        if candidate not in taken:
            names.append(check_name(candidate, field))
        n += 1
    return names


def _checked(clone: Env, sources: list[Vm]) -> list[Checked]:
    """Each source VM's shape, on the source's node (the base is there), never a warm spare."""
    placer = Placer(env_nodes={vm.node_id for vm in sources})
    checked = []
    for i, vm in enumerate(sources):
        spec = NewVm(name=vm.name, template=vm.template, cpu_num=vm.cpu_num, mem_mb=vm.mem_mb,
                     disk_mb=vm.disk_mb, ports=[(p.protocol, p.inner_port) for p in vm.port_mappings.all()],
                     net_kind=vm.net_kind, user_data=vm.user_data)
        clean, template, ports = validate_new_vm(spec, f"vms[{i}]")
        wanted = wanted_features(clean.net_kind, rand_uuid=True, keep_image=False, disk_mb=clean.disk_mb,
                                 template=template)
        ask = Ask.of(template, clean.cpu_num, clean.mem_mb, wanted, ports, disk_mb=clean.disk_mb)
        node = placer.place(ask, "id")
        if node.pk != vm.node_id:
            raise NoCapacity(f"node {vm.node.name}, which holds VM {vm.name}'s disk, "
                             "has no room for its clone")
        checked.append(Checked(clean, ports, node))
    return checked


# --- the operation ------------------------------------------------------------------------


def run(op: Operation, progress: Progress) -> None:
    """Cut the source VMs' disks side by side, then create and boot the clones side by side."""
    sources = [vm for vm in vm_steps.vms_of(op) if str(vm.pk) in op.params["previous"]]
    shares = together.shares_of(sources, lambda pct, msg: progress(pct * 30 // 100, msg))
    vm_steps.raise_failures(op, len(sources), together.run(sources, lambda vm: _cutting(op, vm), shares))
    clone_ids = set(op.params["clone_vm_ids"])
    clones = [vm for vm in vm_steps.vms_of(op) if vm.pk in clone_ids]
    shares = together.shares_of(clones, lambda pct, msg: progress(30 + pct * 70 // 100, msg))
    vm_steps.raise_failures(op, len(clones), together.run(
        clones, lambda vm: vm_steps.creation(vm, start=True), shares))


def _cutting(op: Operation, vm: Vm) -> together.Stage | None:
    """The cut of a source VM's disk (the engine's, in a worker), then its new base recorded,
    its clones put on it, and the VM's status given back; None when an earlier attempt did it."""
    if vm.status != Vm.Status.SNAPSHOTTING:
        return None
    engine, spec = get_engine(vm.node), vm.to_spec()

    def work(progress: Progress):
        progress(10, "cutting its disk")
        started = time.monotonic()
        with fails_as(ErrorCode.SNAPSHOT_CREATE):
            cut = engine.cut_disk(spec)
        return cut, time.monotonic() - started

    def then(result, progress: Progress) -> None:
        cut, took = result
        with transaction.atomic():
            base, _ = DiskBase.objects.get_or_create(node=vm.node, path=cut.base,
                                                     defaults={"parent": vm.disk_base, "source_vm": vm})
            Vm.objects.filter(pk__in=op.params["clones"][str(vm.pk)]).update(disk_base=base)
            Vm.objects.filter(pk=vm.pk, status=Vm.Status.SNAPSHOTTING).update(
                runtime_image=cut.active, disk_base=base, status=op.params["previous"][str(vm.pk)])
        progress(100, f"disk cut (in {took:.3f} s, {cut.how})")

    return together.Stage(work=work, then=then)


def settle(op: Operation) -> None:
    """A clone that failed: sources thawed and back to what their engine says; every clone
    not made is rolled back (and its Env destroyed with it), bases nobody uses removed."""
    previous = op.params["previous"]
    for vm in vm_steps.vms_of(op):
        if str(vm.pk) in previous:
            if vm.status == Vm.Status.SNAPSHOTTING:
                vm_steps.thaw(vm)
            vm_steps.settle_vm(vm, Vm.Status.SNAPSHOTTING)
            disk_bases.release(Vm.objects.get(pk=vm.pk).disk_base_id)
        elif vm.status == Vm.Status.CREATING:
            vm_steps.roll_back_creation(vm)
        else:
            vm_steps.settle_vm(vm, Vm.Status.STARTING)
    for env_id in op.params["envs"]:
        if not Vm.objects.live().filter(env_id=env_id).exists():
            Env.objects.filter(pk=env_id).exclude(status=Env.Status.DESTROYED).update(
                status=Env.Status.DESTROYED, destroyed_at=timezone.now(), is_stopped=True)

