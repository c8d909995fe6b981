"""The create operation's warm path: the spares a request took (vms/warm.py), rewired for
their new Env and restored from their saved memory, together. "Restore" here always means
a spare's; `Vm.Status.RESTORING` is something else (a snapshot being applied, vms/steps.py).

Only engine calls run in the threads (libvirt connections are thread-safe, and an
nftables transaction is atomic on its own); every database read and write stays in
the operation's own thread, so the runner's transaction rules and fencing hold.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.utils import timezone

from engines.errors import ErrorCode, TTError, fails_as
from engines.specs import StartOutcome
from nodes.registry import get_engine
from operations.models import Operation
from operations.registry import Progress
from vms.models import Vm, WarmPool

log = logging.getLogger(__name__)
# At most this many restores at once: each reads its saved memory and starts a QEMU.
PARALLEL = 8


@dataclass(frozen=True)
class SpareRestore:
    """How one spare's restore went: the engine's times, or the error it raised."""

    into_task_ms: float  # from the task's start to this batch's first engine call
    rewire_ms: float
    restore_s: float
    error: Exception | None = None
    was: str = ""  # how the spare waited: WarmPool.Keep.SAVED (memory on disk) or PAUSED (in memory)


def restore_spares(op: Operation, *, start: bool) -> dict[int, SpareRestore]:
    """Rewire (and with `start`, restore) every warm VM of the operation still to be
    started, in parallel; {vm id: SpareRestore}. A retried operation finds a restored one
    running and leaves it so (both calls are idempotent)."""
    vms = list(Vm.objects.filter(pk__in=op.vm_ids, status=Vm.Status.STARTING, start_kind=Vm.StartKind.WARM)
               .select_related("node", "template", "env"))
    if not vms:
        return {}
    jobs = {vm.pk: (get_engine(vm.node), vm.to_spec()) for vm in vms}
    begun = op.started_at or timezone.now()
    into_task_ms = (timezone.now() - begun).total_seconds() * 1000

    def work(pk: int) -> tuple[int, SpareRestore]:
        engine, spec = jobs[pk]
        t0 = time.monotonic()
        rewired, was = t0, ""
        try:
            with fails_as(ErrorCode.FIREWALL_SET_NET):
                engine.resync_net(spec)
            rewired = time.monotonic()
            if start:
                with fails_as(ErrorCode.START_VM):
                    resumed = engine.start_vm(spec) == StartOutcome.RESUMED
                    was = WarmPool.Keep.PAUSED if resumed else WarmPool.Keep.SAVED
        except Exception as exc:  # handled by the caller, in the operation's thread
            return pk, SpareRestore(into_task_ms, (rewired - t0) * 1000, time.monotonic() - rewired, exc, was)
        return pk, SpareRestore(into_task_ms, (rewired - t0) * 1000, time.monotonic() - rewired, None, was)

    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(jobs)), thread_name_prefix="tt-spare") as pool:
        return dict(pool.map(work, jobs))


def record_spare_restore(vm: Vm, restored: SpareRestore, *, start: bool, progress: Progress) -> bool:
    """Record one spare's restore. True when it is done (running, or suspended in an Env
    that is stopped); False when it failed and was discarded: the VM, still holding its
    row, addresses and ports, is then to be booted cold (status creating)."""
    if restored.error is None:
        final = Vm.Status.RUNNING if start else Vm.Status.SUSPENDED
        Vm.objects.filter(pk=vm.pk, status=Vm.Status.STARTING).update(status=final)
        vm.refresh_from_db()
        verb = "resumed" if restored.was == WarmPool.Keep.PAUSED else "restored"
        how = (f"{verb} from a {restored.was} spare in {restored.restore_s:.2f} s" if start
               else "a spare, kept suspended (its Env is stopped)")
        progress(100, f"warm: {how} (network rewired in {restored.rewire_ms:.0f} ms, "
                      f"engine called {restored.into_task_ms:.0f} ms into the task)")
        return True
    why = restored.error.message if isinstance(restored.error, TTError) else str(restored.error)
    log.warning("spare %s of %s did not restore (%s); booting it cold", vm.engine_name, vm, why)
    progress(10, f"warm spare did not restore ({why}): discarded, booting cold")
    # Domain, image, saved memory and wiring go; the row keeps its MAC, IP and ports.
    get_engine(vm.node).destroy_vm(vm.to_spec())
    Vm.objects.filter(pk=vm.pk, status=Vm.Status.STARTING).update(
        status=Vm.Status.CREATING, start_kind=Vm.StartKind.COLD, runtime_image="", latest_meta=None,
    )
    vm.refresh_from_db()
    return False
