"""Task bodies of the warm pools' operations (vms/warm.py): filling a pool with spares
(create, boot, wait for the guest to say it is up, save its memory) and discarding
spares. Safe to run again after a crash at any point, as every step (vms/steps.py):
each spare moves one status at a time, and a spare that fails is discarded on the
spot, so none is left half made.
"""

from __future__ import annotations

import logging

from django.conf import settings

from engines.errors import ErrorCode, TTError, fails_as
from nodes.registry import get_engine
from operations.models import Operation
from operations.registry import Progress, Step
from vms import steps
from vms.kinds import VmKind
from vms.models import Vm, WarmPool
from vms.state import VmAction

log = logging.getLogger(__name__)


def fill_spare(vm: Vm, progress: Progress, *, keep: str) -> None:
    """creating -> starting -> running (the guest up) -> suspending -> suspended (saved to
    disk, or paused in memory: the pool's `keep`)."""
    steps.create_vm(vm, start=True, progress=progress)
    vm.refresh_from_db()
    if vm.status == Vm.Status.RUNNING:
        progress(70, "waiting for the guest to say it is up")
        with fails_as(ErrorCode.START_VM):
            waited = get_engine(vm.node).wait_booted(vm.to_spec(), timeout=settings.TT_WARM_BOOT_TIMEOUT)
        progress(75, f"guest up ({waited})")
        Vm.objects.filter(pk=vm.pk, status=Vm.Status.RUNNING).update(status=Vm.Status.SUSPENDING)
        vm.refresh_from_db()
    if vm.status == Vm.Status.SUSPENDING and keep == WarmPool.Keep.PAUSED:
        with fails_as(ErrorCode.SUSPEND_VM):
            progress(90, f"VM {get_engine(vm.node).pause_vm(vm.to_spec())}")
        Vm.objects.filter(pk=vm.pk, status=Vm.Status.SUSPENDING).update(status=Vm.Status.SUSPENDED)
        return
    steps.power(vm, VmAction.SUSPEND, progress)


def _fill(op: Operation, progress: Progress) -> None:
    def work(vm: Vm, share: Progress) -> None:
        try:
            fill_spare(vm, share, keep=op.params.get("keep", WarmPool.Keep.SAVED))
        except TTError:
            discard_now(vm)
            raise

    steps.each_vm(op, progress, work)


def discard_now(vm: Vm) -> None:
    """Best effort: a spare that failed to be made goes at once (else the pool's next
    tend discards it)."""
    try:
        vm.refresh_from_db()
        steps.destroy_vm(vm, lambda pct, msg: None)
    except Exception:
        log.exception("could not discard the failed spare %s; the pool's next tend will", vm)


def _settle_fill(op: Operation) -> None:
    # What is left is either gone (never created) or settled to what the engine has;
    # the pool's next tend discards every spare that is not suspended.
    for vm in steps.vms_of(op):
        if vm.status == Vm.Status.CREATING:
            steps.roll_back_creation(vm)
        else:
            steps.settle_vm(vm, Vm.Status.STARTING, Vm.Status.SUSPENDING)


STEPS: dict[str, Step] = {
    VmKind.WARM_FILL: Step(run=_fill, settle=_settle_fill),
    VmKind.WARM_DISCARD: Step(run=steps.destroy_vms, settle=steps.settle_destroyed),
}
