"""Task bodies of Env-wide operations, each beside the settle that undoes its claims.

They act on each VM the operation names through vms/steps.py; see there for
what "safe to run again" and "settle" promise.
"""

from __future__ import annotations

from django.utils import timezone

from engines.errors import ErrorCode, fails_as
from envs import cloning
from envs.kinds import EnvKind
from envs.models import Env, Peering
from envs.peering import end_peerings_of
from nodes.registry import get_engine
from operations.models import Operation
from operations.registry import Progress, Step
from vms import state
from vms import steps as vm_steps
from vms.models import Vm
from vms.state import VmAction


def _create(op: Operation, progress: Progress) -> None:
    vm_steps.create_vms(op, progress)


def _start(op: Operation, progress: Progress) -> None:
    vm_steps.power_vms(op, progress, VmAction.START)


def _stop(op: Operation, progress: Progress) -> None:
    vm_steps.power_vms(op, progress, VmAction.STOP)


# --- egress ------------------------------------------------------------------------


def _set_egress(op: Operation, progress: Progress) -> None:
    deny = op.params["deny"]

    def work(vm: Vm, share: Progress) -> None:
        engine = get_engine(vm.node)
        share(50, "denying egress" if deny else "allowing egress")
        with fails_as(ErrorCode.NET_OUTGOING):
            (engine.deny_outgoing if deny else engine.allow_outgoing)(vm.to_spec())

    vm_steps.each_vm(op, progress, work)
    state.release_network(op.vm_ids)


def _revert_egress(op: Operation) -> None:
    # The Env's flag goes back, and every VM's wiring with it.
    Env.objects.filter(pk=op.env_id).update(deny_outgoing=op.params["previous"])
    for vm in vm_steps.vms_of(op):
        vm_steps.resync_network(vm)
    state.release_network(op.vm_ids)


# --- peering ------------------------------------------------------------------------


def _set_reach(op: Operation, progress: Progress) -> None:
    """Each VM of both Envs: the Envs that may reach it are now what the peering says."""
    a, b = op.params["pair"]
    joining = op.kind == EnvKind.ENV_PEER

    def work(vm: Vm, share: Progress) -> None:
        new = vm.to_spec()
        peer = b if vm.env_id == a else a
        before = set(new.reach) - {peer} if joining else set(new.reach) | {peer}
        share(50, "letting the peer Env in" if joining else "shutting the peer Env out")
        with fails_as(ErrorCode.FIREWALL_SET_NET):
            get_engine(vm.node).set_reach(new, previous=new.replace(reach=tuple(sorted(before))))

    vm_steps.each_vm(op, progress, work)
    state.release_network(op.vm_ids)


def _revert_reach(op: Operation) -> None:
    # The peering goes back to what it was, and every VM's wiring with it.
    Peering.objects.filter(pk=op.params["peering"]).update(status=op.params["previous"])
    for vm in vm_steps.vms_of(op):
        vm_steps.resync_network(vm)
    state.release_network(op.vm_ids)


# --- destroy ------------------------------------------------------------------------


def _destroy(op: Operation, progress: Progress) -> None:
    vm_steps.destroy_vms(op, progress)
    Env.objects.filter(pk=op.env_id, status=Env.Status.DESTROYING).update(
        status=Env.Status.DESTROYED, destroyed_at=timezone.now(), is_stopped=True
    )
    # Its peers' VMs stop accepting an Env that is gone.
    for peer in end_peerings_of(op.env):
        for vm in Vm.objects.live().filter(env=peer).exclude(status=Vm.Status.CREATING):
            vm_steps.resync_network(vm)


def _settle_env_destroy(op: Operation) -> None:
    """A destroy (or expiry) that failed: its VMs settle, and the Env is active again."""
    vm_steps.settle_destroyed(op)
    # Back to active so the owner, an operator or the next sweep can retry.
    Env.objects.filter(pk=op.env_id, status=Env.Status.DESTROYING).update(status=Env.Status.ACTIVE)


DESTROY = Step(run=_destroy, settle=_settle_env_destroy)

STEPS: dict[str, Step] = {
    EnvKind.ENV_CREATE: Step(run=_create, settle=vm_steps.settle_created),
    EnvKind.ENV_START: Step(run=_start, settle=vm_steps.settle_power),
    EnvKind.ENV_STOP: Step(run=_stop, settle=vm_steps.settle_power),
    EnvKind.ENV_DENY_OUTGOING: Step(run=_set_egress, settle=_revert_egress),
    EnvKind.ENV_PEER: Step(run=_set_reach, settle=_revert_reach),
    EnvKind.ENV_UNPEER: Step(run=_set_reach, settle=_revert_reach),
    EnvKind.ENV_DESTROY: DESTROY,
    EnvKind.ENV_EXPIRE: DESTROY,
    EnvKind.ENV_CLONE: Step(run=cloning.run, settle=cloning.settle),
}
