"""Portal actions on one VM and its snapshots, and the templates page.

Thin: find the object through visible_to (somebody else's is a 404), call
vms.services with by=request.user, redirect back (to the page the form was on,
else the Env page) with a message.
"""

from __future__ import annotations

import re

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from engines.specs import Feature
from nodes.registry import console_log, driver_class, get_engine
from operations import registry
from operations.models import Operation
from ttportal.errors import InvalidInput, TTError
from ttportal.hours import parse_hours
from ttportal.limits import SNAPSHOT_LIFE_MAX, SNAPSHOT_LIFE_MIN
from ttportal.portal import back_url, call_and_redirect, post_action
from vms import guest_views, operations_table, policy, services, state
from vms.blocked import blocked_counts
from vms.models import Snapshot, Vm, VmTemplate, engine_kinds_in_service, ssh_commands
from vms.state import VmAction

# How many operations the Env and VM pages list (the admin has the whole log).
OPERATIONS_SHOWN = 25


# What the operations table shows of each operation: plain values, no Operation and user
# instances (the 25 rows of an Env page took 1.2 ms as instances, 0.5 ms as values).
_OPERATION_FIELDS = ("kind", "status", "target", "progress", "attempt", "error_code", "error_message",
                     "log", "created_at", "requested_by_id")


def operations_context(env, vm: Vm | None = None, *, running: bool | None = None) -> dict:
    """The operations partial's context (here, not in envs: the VM page shows it too, and
    envs sits above vms): the Env's latest operations (on a VM page, that
    VM's and the Env-wide ones, which act on it too) and whether any still runs
    (`running`: when the caller asked it already, with the Env)."""
    ops = env.operations.all()
    poll_url = reverse("envs:operations", args=[env.pk])
    if vm is not None:
        ops = ops.filter(Q(vm=vm) | Q(vm__isnull=True))
        poll_url += f"?vm={vm.pk}"
    by_name = f"requested_by__{get_user_model().USERNAME_FIELD}"
    shown = list(ops.values(*_OPERATION_FIELDS, by_name)[:OPERATIONS_SHOWN])
    for op in shown:
        # Display values once here: date filters per row were a fifth of a busy Env page.
        created = timezone.localtime(op["created_at"])
        op["when"], op["when_iso"] = f"{created:%m-%d %H:%M:%S}", created.isoformat()
        op["kind_label"] = registry.kind_label(op["kind"])
        op["by_name"] = op[by_name] if op["requested_by_id"] is not None else "system"
        op["is_live"] = op["status"] in Operation.LIVE
        lines = op["log"].strip().splitlines() if op["status"] not in Operation.DONE else []
        op["last_line"] = lines[-1] if lines else ""  # what a running operation is doing now
        op["progress"] = str(op["progress"])  # shown three times: an int is localized each time
    if running is None:
        # Asked of the database, not of the rows shown: an old operation may still run.
        running = ops.filter(status__in=Operation.LIVE).exists()
    return {"env": env, "operations": shown, "operation_rows": operations_table.rows_html(shown),
            "running": running, "poll_url": poll_url}


def _vm_for(request: HttpRequest, pk: int) -> Vm:
    return get_object_or_404(Vm.objects.visible_to(request.user).select_related("env"), pk=pk)


def _snapshot_for(request: HttpRequest, pk: int) -> Snapshot:
    return get_object_or_404(Snapshot.objects.visible_to(request.user).select_related("vm__env"), pk=pk)


def _back(vm: Vm) -> str:
    return reverse("envs:detail", args=[vm.env_id]) + f"#vm-{vm.pk}"


def _split(text: str) -> list[str]:
    """One item per line, or separated by commas or spaces."""
    return [item for item in re.split(r"[\s,]+", text) if item]


# The policy's action behind each of the VM page's buttons.
ACTION_OF = {VmAction.START: "vm_start", VmAction.STOP: "vm_stop", VmAction.SUSPEND: "vm_suspend",
             VmAction.SNAPSHOT: "snapshot_create", VmAction.APPLY: "snapshot_apply",
             VmAction.DESTROY: "vm_destroy"}


@login_required
@require_GET
def vm_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One VM: its facts, ports (editable), snapshots, blacklist, serial console and operations."""
    vm = get_object_or_404(
        Vm.objects.visible_to(request.user).select_related("env__owner", "template", "node"), pk=pk,
    )
    env = vm.env
    now = timezone.now()
    live = env.status == env.Status.ACTIVE and vm.is_live
    ports = list(vm.port_mappings.order_by("protocol", "inner_port"))
    snapshots = list(vm.snapshots.order_by("created_at", "id"))
    cooldown = policy.cooldown_remaining(env, now)
    # What this user may do here (its owner all; a member what their role holds; staff by
    # permission): a button they may not use is not shown.
    may = policy.allowed_actions(request.user, env, (*ACTION_OF.values(), "vm_set_ports", "vm_set_blacklist",
                                                     "snapshot_destroy", "vm_console", "vm_console_view"))
    actions = {action: live and state.can(vm, action) and may[ACTION_OF[action]]
               for action in (VmAction.START, VmAction.STOP, VmAction.SUSPEND, VmAction.SNAPSHOT,
                              VmAction.APPLY, VmAction.DESTROY)}
    actions["suspend"] = actions["suspend"] and Feature.SUSPEND in driver_class(vm.node.kind).features
    try:
        console, console_error = console_log(vm.node, vm.engine_name), ""
    except OSError as exc:  # e.g. a log the portal's user may not read
        console, console_error = None, exc.strerror or str(exc)
    return render(request, "vms/detail.html", {
        **operations_context(env, vm), "vm": vm, "live": live, "actions": actions,
        "start_label": "Resume" if vm.status == Vm.Status.SUSPENDED else "Start",
        "ports": [(f"{vm.node.public_host}:{pm.public_port}", pm.inner_label) for pm in ports],
        "ports_text": ", ".join(pm.inner_label for pm in ports),
        "ssh": ssh_commands(vm.node.public_host,
                            [(pm.public_port, pm.inner_port, pm.protocol) for pm in ports]),
        "snapshots": snapshots, "blacklist_text": "\n".join(vm.net_blacklist or []),
        "can_change_net": (live and state.can(vm, VmAction.NETWORK) and not vm.net_busy
                           and may["vm_set_ports"] and may["vm_set_blacklist"]),
        "cooldown": cooldown, "here": reverse("vms:detail", args=[vm.pk]),
        "console": console, "console_error": console_error,
        # Run a command, upload and download a file: "" where this user can now, else why not.
        "ways_in": guest_views.ways_in(vm, request.user) if vm.is_live else {},
        # The live console (vms/console.py): running, its engine has one, and this user may
        # watch it (type in it too: console_may_type; a viewer member watches only).
        "console_live": (live and vm.status == Vm.Status.RUNNING
                         and Feature.CONSOLE in driver_class(vm.node.kind).features
                         and may["vm_console_view"]),
        "console_may_type": may["vm_console"], "may_delete_snapshot": may["snapshot_destroy"],
        # What its node's firewall refused it (None: the node could not be asked).
        "blocked": blocked_counts(vm.node, vm.ip) if vm.is_live else None,
    })


@login_required
@require_GET
def vm_guest(request: HttpRequest, pk: int) -> HttpResponse:
    """What the VM's guest agent reports (its addresses), beside what we expect: a part of
    the VM page, fetched after the page itself (asking a guest can take a moment)."""
    vm = get_object_or_404(Vm.objects.visible_to(request.user).select_related("node"), pk=pk)
    addresses, why = None, ""
    if "guest-agent" not in (vm.features or []):
        why = "Its template has no guest agent."
    elif vm.status != Vm.Status.RUNNING:
        why = "It is not running."
    else:
        try:
            addresses = get_engine(vm.node).guest_addresses(vm.to_spec())
        except TTError as exc:  # the node cannot be reached
            why = f"Its node could not be asked: {exc.message}"
        else:
            if addresses is None:
                why = "The guest agent does not answer (yet): is the VM still booting?"
    return render(request, "vms/_guest.html", {"vm": vm, "addresses": addresses, "why": why})


@login_required
@require_GET
def template_list(request: HttpRequest) -> HttpResponse:
    """What a new VM can be made from, with the engines it runs on; staff also see the
    templates that cannot run now (disabled, or no enabled node runs their engines)."""
    kinds = engine_kinds_in_service()
    templates = VmTemplate.objects.order_by("name")
    all_of_them = policy.may(request.user, "template_view_all")
    templates = list(templates.with_runnable(kinds) if all_of_them else templates.runnable(kinds))
    for template in templates:
        template.engines = template.engine_labels(kinds)
        template.idle_engines = template.engine_labels(kinds, in_service=False)
    return render(request, "vms/templates.html", {"templates": templates, "staff": all_of_them})


@require_POST
@login_required
def snapshot_create(request: HttpRequest, pk: int) -> HttpResponse:
    """A snapshot named by the user; `life_time_hours` empty keeps it until deleted."""
    vm = _vm_for(request, pk)
    try:
        life_time = parse_hours(request.POST.get("life_time_hours"), "life_time_hours",
                                min_seconds=SNAPSHOT_LIFE_MIN, max_seconds=SNAPSHOT_LIFE_MAX,
                                empty="keep it until deleted")
    except InvalidInput as exc:
        messages.error(request, f"Life time ({exc.field}): {exc.message}")
        return HttpResponseRedirect(back_url(request, _back(vm)))
    name = request.POST.get("name", "").strip()
    return call_and_redirect(request, lambda: services.snapshot_create(vm=vm, name=name, life_time=life_time,
                                                                       by=request.user),
               f"Taking snapshot {name} of {vm.name}", _back(vm))


vm_start = post_action(_vm_for, services.vm_start, target="vm", back=_back,
                       says=lambda vm: f"Starting {vm.name}")
vm_stop = post_action(_vm_for, services.vm_stop, target="vm", back=_back,
                      says=lambda vm: f"Stopping {vm.name}")
vm_suspend = post_action(_vm_for, services.vm_suspend, target="vm", back=_back,
                         says=lambda vm: f"Suspending {vm.name}")
vm_destroy = post_action(_vm_for, services.vm_destroy, target="vm", back=_back,
                         says=lambda vm: f"Destroying {vm.name}")
# Addresses or ports: one per line, or separated by commas or spaces; empty clears.
vm_blacklist = post_action(_vm_for, services.vm_set_blacklist, target="vm", back=_back,
                           says=lambda vm: f"Updating the blacklist of {vm.name}",
                           fields=lambda request: {"addresses": _split(request.POST.get("addresses", ""))})
vm_ports = post_action(_vm_for, services.vm_set_ports, target="vm", back=_back,
                       says=lambda vm: f"Updating the forwarded ports of {vm.name}",
                       # "53/UDP" is typed too: the API takes the lower-case form only.
                       fields=lambda request: {"ports": _split(request.POST.get("ports", "").lower())})
snapshot_apply = post_action(_snapshot_for, services.snapshot_apply, target="snapshot",
                             back=lambda snap: _back(snap.vm),
                             says=lambda snap: f"Applying snapshot {snap.name} to {snap.vm.name}")
snapshot_destroy = post_action(_snapshot_for, services.snapshot_destroy, target="snapshot",
                               back=lambda snap: _back(snap.vm),
                               says=lambda snap: f"Deleting snapshot {snap.name} of {snap.vm.name}")
