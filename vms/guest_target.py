"""The one check before anything goes into a running guest: who may, which VM, and whether
its engine and template can. Exec and files (vms/guest_access.py) and the console
(vms/console.py) all start here, whatever the interface (API, portal, websocket).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from audit import recording as audit
from engines.base import VmEngine
from engines.specs import Feature, VmSpec
from nodes.registry import driver_class, get_engine
from ttportal.errors import IllegalState, Unsupported, Waking
from vms import env_wake, policy
from vms.models import EXEC, FILES, Vm, env_model

# The action (ttportal.permissions.ACTIONS) and the template feature each way in needs; the
# console needs no template feature (every QEMU guest has a serial port, every container a tty).
ACTION = {Feature.EXEC: "vm_exec", Feature.FILES: "vm_files", Feature.CONSOLE: "vm_console"}
TEMPLATE_FEATURE = {Feature.EXEC: EXEC, Feature.FILES: FILES, Feature.CONSOLE: None}


@dataclass(frozen=True)
class GuestTarget:
    """A running VM that may be entered this way: its row, its spec and its node's engine."""

    vm: Vm
    spec: VmSpec
    engine: VmEngine


def check_way_in(vm: Vm, feature: Feature) -> None:
    """Whether the VM's engine and template have `feature`: 422 unsupported_feature naming it."""
    if feature not in driver_class(vm.node.kind).features:
        raise Unsupported(f"the {vm.node.kind} engine of node {vm.node.name} lacks the feature {feature}")
    wanted = TEMPLATE_FEATURE[feature]
    if wanted is not None and wanted not in (vm.template.features or []):
        raise Unsupported(f"template {vm.template.name} lacks the feature {wanted} "
                          f"(no guest agent or shell in its guest answers it)")


def guest_target(vm: Vm, feature: Feature, *, by, action: str | None = None) -> GuestTarget:
    """Check `by` may go into `vm` by `feature` (owner, or staff with the action's
    permission), that its Env is live and the VM running (never in a transitional state:
    starting, stopping, a snapshot being taken...), and that its engine and template can.
    `action`: another than the feature's (a console watched only: vm_console_view)."""
    policy.check_can_manage(by, vm.env, action or ACTION[feature])
    policy.check_live(vm.env)
    check_way_in(vm, feature)
    vm.refresh_from_db(fields=["status", "asleep_at"])
    if vm.asleep_at is not None and vm.status in (Vm.Status.SUSPENDED, Vm.Status.STARTING):
        # Its Env sleeps (envs/sleep.py): going into it is activity, as a connection to
        # one of its ports is. Wake it, and let the client come back once it runs.
        # The wake is an action of its own in the audit log, by whoever went in (the
        # console's or command's own event says it was refused: waking).
        with audit.on_its_own():
            op = env_wake.wake_env(vm.env_id, why=f"{feature} by {by.get_username() if by else 'the system'}",
                                   by=by)
        raise Waking(f"Env {vm.env.name} is asleep and is being woken"
                     + (f" (operation {op.pk})" if op is not None else ""))
    if vm.status != Vm.Status.RUNNING:
        raise IllegalState(f"VM {vm.name} is {vm.status}: only a running VM can be entered")
    mark_active(vm.env_id)
    return GuestTarget(vm=vm, spec=vm.to_spec(), engine=get_engine(vm.node))


def mark_active(env_id: int) -> None:
    """Console, exec or files used: the Env is not idle (it sleeps only after its
    idle_suspend without that: envs/sleep.py). At most one write a minute per Env."""
    now = timezone.now()
    (env_model().objects.filter(pk=env_id).exclude(active_at__gt=now - timedelta(seconds=60))
     .update(active_at=now))
