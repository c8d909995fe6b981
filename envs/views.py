"""Portal pages for Envs: My Envs, a new Env, the Env page and its actions.

Thin on purpose: parse the request, call envs.services with by=request.user,
redirect with a message (or render). Every lookup goes through visible_to, so
somebody else's Env is a 404, never a leak.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Exists, OuterRef, Prefetch, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from envs import policy, services
from envs.forms import EnvForm, VmRowFormSet, filled_rows, hours, show_error
from envs.models import Env, Operation
from ttportal.errors import TTError
from ttportal.portal import act, back_url
from vms import state
from vms.models import PortMapping, Snapshot, Vm, VmTemplate

# How many operations the Env page lists (the admin has the whole log).
OPERATIONS_SHOWN = 25
# The countdown turns into a warning in the Env's last hour.
WARN_SECONDS = 3600

_ACTIVE_OPS = (Operation.Status.QUEUED, Operation.Status.RUNNING)
_LIVE_VM = ~Q(vms__status=Vm.Status.DESTROYED)


def _env_for(request: HttpRequest, pk: int) -> Env:
    return get_object_or_404(Env.objects.visible_to(request.user).select_related("owner"), pk=pk)


def _env_url(env: Env) -> str:
    return reverse("envs:detail", args=[env.pk])


# --- pages --------------------------------------------------------------------


@login_required
@require_GET
def env_list(request: HttpRequest) -> HttpResponse:
    """My Envs (staff: everyone's). One query for the rows whatever their number."""
    show_destroyed = request.GET.get("destroyed") == "1"
    envs = Env.objects.visible_to(request.user).select_related("owner").annotate(
        vm_count=Count("vms", filter=_LIVE_VM),
        vms_running=Count("vms", filter=Q(vms__status=Vm.Status.RUNNING)),
        busy=Exists(Operation.objects.filter(env=OuterRef("pk"), status__in=_ACTIVE_OPS)),
    )
    envs = envs.filter(status=Env.Status.DESTROYED) if show_destroyed else envs.live()
    now = timezone.now()
    rows = list(envs)
    for env in rows:
        env.left = env.seconds_left(now)
        env.warn = env.is_live and env.left < WARN_SECONDS
        env.cooldown = policy.cooldown_remaining(env, now)
    return render(request, "envs/list.html", {
        "envs": rows, "show_destroyed": show_destroyed, "now": now, "warn_seconds": WARN_SECONDS,
    })


@login_required
@require_http_methods(["GET", "POST"])
def env_create(request: HttpRequest) -> HttpResponse:
    """A new Env owned by the signed-in user, through envs.services.env_create."""
    if request.method == "POST":
        form = EnvForm(request.POST)
        formset = VmRowFormSet(request.POST, prefix="vms")
        if form.is_valid() and formset.is_valid():
            rows = filled_rows(formset)
            try:
                op = services.env_create(
                    owner=request.user, by=request.user, name=form.cleaned_data["name"],
                    vms=[row.to_new_vm() for row in rows], lifetime=form.lifetime_seconds(),
                    deny_outgoing=form.cleaned_data["deny_outgoing"],
                    idempotency_key=form.cleaned_data["idempotency_key"],
                )
            except TTError as exc:
                show_error(exc, form, formset, rows)
            else:
                messages.success(request, f"Env {op.env.name}: creating its VMs (operation {op.pk}).")
                return HttpResponseRedirect(_env_url(op.env))
    else:
        form = EnvForm()
        formset = VmRowFormSet(prefix="vms")
    templates = VmTemplate.objects.filter(enabled=True).order_by("name")
    return render(request, "envs/create.html", {
        "form": form, "formset": formset, "templates": templates,
        "max_hours": hours(settings.TT_MAX_ENV_LIFETIME),
    })


def _url_maker(name: str):
    """pk -> the URL of `name`, reversed once per page instead of once per row (a reverse()
    per VM, action and snapshot was a sixth of an Env page with 100 VMs)."""
    sentinel = 987654321
    head, _, tail = reverse(name, args=[sentinel]).partition(str(sentinel))
    return lambda pk: f"{head}{pk}{tail}"


_VM_URLS = ("start", "stop", "destroy", "snapshot_create", "blacklist")
_SNAPSHOT_URLS = ("snapshot_apply", "snapshot_destroy")


def _vm_rows(env: Env) -> list[Vm]:
    """The Env's live VMs with everything the page shows, in a fixed number of queries."""
    vms = list(
        env.vms.live().select_related("template", "node").prefetch_related(
            Prefetch("port_mappings", queryset=PortMapping.objects.select_related("node")),
            Prefetch("snapshots", queryset=Snapshot.objects.order_by("created_at", "id")),
        )
    )
    live = env.status == Env.Status.ACTIVE
    vm_urls = {name: _url_maker(f"vms:{name}") for name in _VM_URLS}
    snapshot_urls = {name: _url_maker(f"vms:{name}") for name in _SNAPSHOT_URLS}
    for vm in vms:
        vm.env = env  # the page's copy: no query per VM for vm.env
        vm.urls = {name: make(vm.pk) for name, make in vm_urls.items()}
        for snap in vm.snapshots.all():
            snap.urls = {name.removeprefix("snapshot_"): make(snap.pk)
                         for name, make in snapshot_urls.items()}
        vm.actions = {action: live and state.can(vm, action)
                      for action in ("start", "stop", "snapshot", "apply", "destroy")}
        vm.can_change_net = live and state.can(vm, "network") and not vm.net_busy
        vm.blacklist_text = "\n".join(vm.net_blacklist or [])
    return vms


def _operations(env: Env) -> tuple[list[Operation], bool]:
    ops = list(env.operations.select_related("requested_by")[:OPERATIONS_SHOWN])
    for op in ops:
        lines = op.log.strip().splitlines()
        op.last_line = lines[-1] if lines else ""  # what a running operation is doing now
    # Asked of the database, not of the rows shown: an old operation may still run.
    running = env.operations.filter(status__in=_ACTIVE_OPS).exists()
    return ops, running


@login_required
@require_GET
def env_detail(request: HttpRequest, pk: int) -> HttpResponse:
    env = _env_for(request, pk)
    now = timezone.now()
    vms = _vm_rows(env)
    ops, running = _operations(env)
    left = env.seconds_left(now)
    live = env.status == Env.Status.ACTIVE
    limit = env.start_at + timedelta(seconds=settings.TT_MAX_ENV_LIFETIME)
    return render(request, "envs/detail.html", {
        "env": env, "vms": vms, "operations": ops, "running": running, "now": now,
        "left": left, "warn": env.is_live and left < WARN_SECONDS, "live": live,
        "cooldown": policy.cooldown_remaining(env, now),
        "can_start": live and any(vm.actions["start"] for vm in vms),
        "can_stop": live and any(vm.actions["stop"] for vm in vms),
        "extend_limit": limit, "can_extend": live and env.end_at < limit,
    })


@login_required
@require_GET
def env_operations(request: HttpRequest, pk: int) -> HttpResponse:
    """The operations partial the Env page polls (htmx) while something runs."""
    env = _env_for(request, pk)
    ops, running = _operations(env)
    response = render(request, "envs/_operations.html", {"env": env, "operations": ops, "running": running})
    if request.htmx and not running:
        # The poll that sees everything finished asks the page to refresh the VMs once.
        response["HX-Trigger"] = "tt-ops-finished"
    return response


# --- actions (POST only; each redirects back with a message) -----------------


@require_POST
@login_required
def env_start(request: HttpRequest, pk: int) -> HttpResponse:
    env = _env_for(request, pk)
    return act(request, lambda: services.env_start(env=env, by=request.user),
               f"Starting the VMs of {env.name}", _env_url(env))


@require_POST
@login_required
def env_stop(request: HttpRequest, pk: int) -> HttpResponse:
    env = _env_for(request, pk)
    return act(request, lambda: services.env_stop(env=env, by=request.user),
               f"Stopping the VMs of {env.name}", _env_url(env))


@require_POST
@login_required
def env_extend(request: HttpRequest, pk: int) -> HttpResponse:
    """Move the end by `hours` from the current end (or from now, if it has passed)."""
    env = _env_for(request, pk)
    try:
        more = Decimal(request.POST.get("hours", "").strip())
        if not more.is_finite() or more <= 0:
            raise InvalidOperation
    except InvalidOperation:
        messages.error(request, "Extend by: give a positive number of hours.")
        return HttpResponseRedirect(back_url(request, _env_url(env)))
    extend_by = timedelta(seconds=int(more * 3600))
    return act(request, lambda: services.env_extend(env=env, by=request.user, extend_by=extend_by),
               f"{env.name} extended by {more} h.", _env_url(env))


@require_POST
@login_required
def env_outgoing(request: HttpRequest, pk: int) -> HttpResponse:
    env = _env_for(request, pk)
    deny = request.POST.get("deny") == "1"
    verb = "Denying" if deny else "Allowing"
    return act(request, lambda: services.env_set_deny_outgoing(env=env, deny=deny, by=request.user),
               f"{verb} outgoing traffic for {env.name}", _env_url(env))


@require_POST
@login_required
def env_destroy(request: HttpRequest, pk: int) -> HttpResponse:
    """Destroy the Env once the user has typed its name (the no-JavaScript confirmation)."""
    env = _env_for(request, pk)
    if request.POST.get("confirm", "").strip() != env.name:
        messages.error(request, f"Not destroyed: type the Env's name ({env.name}) to confirm.")
        return HttpResponseRedirect(_env_url(env))
    return act(request, lambda: services.env_destroy(env=env, by=request.user),
               f"Destroying {env.name}", _env_url(env))

