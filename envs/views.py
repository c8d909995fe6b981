"""Portal pages for Envs: My Envs, a new Env, the Env page and its actions.

Thin on purpose: parse the request, call envs.services with by=request.user,
redirect with a message (or render). Every lookup goes through visible_to, so
somebody else's Env is a 404, never a leak.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Exists, OuterRef, Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.template.backends.utils import csrf_input
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import quotas
from envs import cloning, env_table, envfiles, peering, services, sharing, sleep, vm_table
from envs.forms import (
    AddVmForm,
    EnvFileForm,
    EnvForm,
    VmRowFormSet,
    create_env_from,
    create_env_from_file,
    show_vm_error,
)
from envs.models import Env, EnvMember
from operations.models import Operation
from ttportal.errors import InvalidInput
from ttportal.hours import hours, parse_hours
from ttportal.portal import back_url, call_and_redirect, describe, post_action, refused_here
from vms import policy
from vms import services as vm_services
from vms.models import Vm, VmTemplate, engine_kinds_in_service, live_vms
from vms.views import operations_context

# The countdown turns into a warning in the Env's last hour.
WARN_SECONDS = 3600
# The actions the Env page offers: a button the viewer may not use is not shown.
PAGE_ACTIONS = ("env_start", "env_stop", "env_extend", "env_set_idle_suspend", "env_set_deny_outgoing",
                "env_clone", "env_destroy", "env_peer", "env_unpeer", "env_share", "env_transfer",
                "vm_add", "vm_start", "vm_stop", "vm_destroy")


def _env_for(request: HttpRequest, pk: int, *, busy: bool = False) -> Env:
    """The Env, or 404; with `busy`, also whether any of its operations still runs (`env.busy`)
    and whether it is shared with anyone (`env.shared`)."""
    envs = Env.objects.visible_to(request.user).select_related("owner")
    if busy:
        envs = envs.annotate(busy=_has_live_operations(),
                             shared=Exists(EnvMember.objects.filter(env=OuterRef("pk"))))
    return get_object_or_404(envs, pk=pk)


def _has_live_operations() -> Exists:
    return Exists(Operation.objects.filter(env=OuterRef("pk"), status__in=Operation.LIVE))


def _env_url(env: Env) -> str:
    return reverse("envs:detail", args=[env.pk])


# --- pages --------------------------------------------------------------------


@login_required
@require_GET
def env_list(request: HttpRequest) -> HttpResponse:
    """My Envs (staff with envs.view_env: everyone's). One query for the rows whatever their number."""
    show_destroyed = request.GET.get("destroyed") == "1"
    envs = Env.objects.visible_to(request.user).select_related("owner").annotate(
        vm_count=Count("vms", filter=live_vms()),
        vms_running=Count("vms", filter=Q(vms__status=Vm.Status.RUNNING)),
        busy=_has_live_operations(),
    )
    envs = envs.filter(status=Env.Status.DESTROYED) if show_destroyed else envs.live()
    now = timezone.now()
    rows = list(envs)
    # Envs shared with the user: their role on each (one query, only when some are).
    shared = [env.pk for env in rows if env.owner_id != request.user.pk]
    roles = EnvMember.objects.roles_by_env(request.user, shared) if shared else {}
    for env in rows:
        env.my_role = "owner" if env.owner_id == request.user.pk else roles.get(env.pk)
        env.left = env.seconds_left(now)
        env.warn = env.is_live and env.left < WARN_SECONDS
        env.cooldown = policy.cooldown_remaining(env, now)
    all_envs = policy.may(request.user, "env_view")  # the same rule as visible_to
    return render(request, "envs/list.html", {
        "envs": rows, "show_destroyed": show_destroyed, "now": now, "warn_seconds": WARN_SECONDS,
        "all_envs": all_envs, "env_rows": env_table.rows_html(
            rows, all_envs=all_envs, warn_seconds=WARN_SECONDS, csrf_input=csrf_input(request)),
        "quota": quotas.report(request.user),  # the user's own, staff too (two queries)
    })


@login_required
@require_http_methods(["GET", "POST"])
def env_create(request: HttpRequest) -> HttpResponse:
    """A new Env owned by the signed-in user, through envs.services.env_create."""
    kinds = engine_kinds_in_service()  # read once: the form's rows and the table offer the same
    offer = {"kinds": kinds}
    file_form = EnvFileForm(prefix="file")
    if request.method == "POST" and "file-text" in request.POST:  # the import form's
        form, formset = EnvForm(), VmRowFormSet(prefix="vms", form_kwargs=offer)
        file_form = EnvFileForm(request.POST, request.FILES, prefix="file")
        op = create_env_from_file(file_form, by=request.user)
        if op is not None:
            messages.success(request, f"Env {op.env.name}, from its file: creating its VMs "
                                      f"(operation {op.pk}).")
            return HttpResponseRedirect(_env_url(op.env))
    elif request.method == "POST":
        form = EnvForm(request.POST)
        formset = VmRowFormSet(request.POST, prefix="vms", form_kwargs=offer)
        op = create_env_from(form, formset, by=request.user, owner=request.user)
        if op is not None:
            messages.success(request, f"Env {op.env.name}: creating its VMs (operation {op.pk}).")
            return HttpResponseRedirect(_env_url(op.env))
    else:
        form = EnvForm()
        formset = VmRowFormSet(prefix="vms", form_kwargs=offer)
    templates = list(VmTemplate.objects.runnable(kinds).order_by("name"))
    for template in templates:
        template.engines = template.engine_labels(kinds)
    return render(request, "envs/create.html", {
        "form": form, "formset": formset, "templates": templates, "file_form": file_form,
        "max_hours": hours(settings.TT_MAX_ENV_LIFETIME), "quota": quotas.report(request.user),
    })


@login_required
@require_GET
def env_download(request: HttpRequest, pk: int) -> HttpResponse:
    """The Env as tt.yaml ("Download as tt.yaml"): `tt env up -f` of it makes the same shape."""
    env = _env_for(request, pk)
    response = HttpResponse(envfiles.text_of(env), content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{env.name}.tt.yaml"'
    return response


@login_required
@require_GET
def env_detail(request: HttpRequest, pk: int) -> HttpResponse:
    env = _env_for(request, pk, busy=True)  # asked with the Env: one query fewer
    now = timezone.now()
    my_role = env.role_of(request.user)  # "owner", a member's role, or None (staff)
    can = (dict.fromkeys(PAGE_ACTIONS, True) if my_role == "owner"
           else policy.allowed_actions(request.user, env, PAGE_ACTIONS))
    vms = vm_table.vm_rows(env, can)
    left = env.seconds_left(now)
    live = env.status == Env.Status.ACTIVE
    limit = env.start_at + timedelta(seconds=settings.TT_MAX_ENV_LIFETIME)
    cooldown = policy.cooldown_remaining(env, now)
    return render(request, "envs/detail.html", {
        **operations_context(env, running=env.busy), "vms": vms, "now": now,
        "left": left, "warn": env.is_live and left < WARN_SECONDS, "live": live,
        "cooldown": cooldown, "vm_table": vm_table.rows_html(vms, cooldown),
        "node_count": vm_table.node_count(vms),
        "can_start": live and any(vm["actions"]["start"] for vm in vms),
        "can_stop": live and any(vm["actions"]["stop"] for vm in vms),
        "extend_limit": limit, "can_extend": live and env.end_at < limit,
        "peers": peering.peerings_of(env), "clone_max": cloning.COUNT_MAX,
        "my_role": my_role, "can": can, "roles": EnvMember.Role.choices,
        # Read only when there are some (asked with the Env): an Env shared with nobody costs no query.
        "members": list(sharing.members_of(env)) if env.shared and (can["env_share"] or my_role) else [],
    })


@login_required
@require_GET
def env_operations(request: HttpRequest, pk: int) -> HttpResponse:
    """The operations partial the Env and VM pages poll (htmx) while something runs."""
    env = _env_for(request, pk)
    vm = None
    if request.GET.get("vm", "").isdigit():
        vm = get_object_or_404(env.vms.all(), pk=int(request.GET["vm"]))
    context = operations_context(env, vm)
    response = render(request, "envs/_operations.html", context)
    if request.htmx and not context["running"]:
        # The poll that sees everything finished asks the page to refresh the VMs once.
        response["HX-Trigger"] = "tt-ops-finished"
    return response


# --- actions (POST only; each redirects back with a message) -----------------


env_start = post_action(_env_for, services.env_start, target="env", back=_env_url,
                        says=lambda env: f"Starting the VMs of {env.name}")
env_stop = post_action(_env_for, services.env_stop, target="env", back=_env_url,
                       says=lambda env: f"Stopping the VMs of {env.name}")


@require_POST
@login_required
def env_extend(request: HttpRequest, pk: int) -> HttpResponse:
    """Move the end by `hours` from the current end (or from now, if it has passed).

    No extension can be longer than a whole lifetime: that bound refuses absurd input
    here, in hours; env_extend then holds the end to start + the maximum lifetime.
    """
    env = _env_for(request, pk)
    try:
        seconds = parse_hours(request.POST.get("hours"), "hours", max_seconds=settings.TT_MAX_ENV_LIFETIME)
    except InvalidInput as exc:
        messages.error(request, f"Extend by ({exc.field}): {exc.message}")
        return HttpResponseRedirect(back_url(request, _env_url(env)))

    def extend():
        try:
            return services.env_extend(env=env, by=request.user, extend_by=timedelta(seconds=seconds))
        except InvalidInput as exc:  # the service names its parameter, extend_by: this form's is hours
            raise type(exc)("hours", exc.message) from exc

    return call_and_redirect(request, extend, f"{env.name} extended by {hours(seconds)} h.", _env_url(env))


@require_POST
@login_required
def env_outgoing(request: HttpRequest, pk: int) -> HttpResponse:
    env = _env_for(request, pk)
    deny = request.POST.get("deny") == "1"
    verb = "Denying" if deny else "Allowing"
    return call_and_redirect(request,
                             lambda: services.env_set_deny_outgoing(env=env, deny=deny, by=request.user),
                             f"{verb} outgoing traffic for {env.name}", _env_url(env))


@require_POST
@login_required
def env_idle_suspend(request: HttpRequest, pk: int) -> HttpResponse:
    """Sleep after `minutes` idle; empty: never (envs/sleep.py)."""
    env = _env_for(request, pk)
    raw = request.POST.get("minutes", "").strip()
    try:
        minutes = int(raw) if raw else None
    except ValueError:
        messages.error(request, f"Sleep when idle (minutes): {sleep.IDLE_SUSPEND_RULE}")
        return HttpResponseRedirect(back_url(request, _env_url(env)))
    try:
        services.env_set_idle_suspend(env=env, minutes=minutes, by=request.user)
    except Exception as exc:
        error = refused_here(exc)
        if isinstance(error, InvalidInput):
            messages.error(request, f"Sleep when idle (minutes): {error.message}")
        else:
            messages.error(request, str(error))
    else:
        messages.success(request, f"{env.name} sleeps after {minutes} min idle." if minutes
                         else f"{env.name} never sleeps.")
    return HttpResponseRedirect(back_url(request, _env_url(env)))


@require_POST
@login_required
def env_destroy(request: HttpRequest, pk: int) -> HttpResponse:
    """Destroy the Env once the user has typed its name (the no-JavaScript confirmation)."""
    env = _env_for(request, pk)
    if request.POST.get("confirm", "").strip() != env.name:
        messages.error(request, f"Not destroyed: type the Env's name ({env.name}) to confirm.")
        return HttpResponseRedirect(_env_url(env))
    return call_and_redirect(request, lambda: services.env_destroy(env=env, by=request.user),
                             f"Destroying {env.name}", _env_url(env))



@require_POST
@login_required
def env_clone(request: HttpRequest, pk: int) -> HttpResponse:
    """`count` clones of the Env (envs/cloning.py), owned by the user; back to the Env's page."""
    env = _env_for(request, pk)
    count = request.POST.get("count", "1").strip() or "1"
    return call_and_redirect(request, lambda: cloning.env_clone(env=env, by=request.user, count=count),
                             f"Cloning {env.name}: the clones appear under My Envs", _env_url(env))


@require_POST
@login_required
def env_peer(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask for, or accept, a peering with the Env named `owner/name`."""
    env = _env_for(request, pk)
    ref = request.POST.get("env", "").strip()
    return call_and_redirect(request,
                             lambda: peering.env_peer(env=env, other=peering.find_env(ref), by=request.user),
                             f"Peering {env.name} with {ref}", _env_url(env))


@require_POST
@login_required
def env_unpeer(request: HttpRequest, pk: int, other: int) -> HttpResponse:
    """End, decline or withdraw a peering (the other Env is one this Env is peered with)."""
    env = _env_for(request, pk)
    other_env = peering.peer_of(env, other)
    if other_env is None:
        raise Http404("this Env has no peering with that one")
    return call_and_redirect(request, lambda: peering.env_unpeer(env=env, other=other_env, by=request.user),
                             f"Ending the peering of {env.name} with {other_env.owner}/{other_env.name}",
                             _env_url(env))


@login_required
@require_http_methods(["GET", "POST"])
def env_add_vm(request: HttpRequest, pk: int) -> HttpResponse:
    """One more VM in a live Env, through vms.services.vm_add."""
    env = _env_for(request, pk)
    if request.method == "POST":
        form = AddVmForm(request.POST)
        if form.is_valid():
            try:
                op = vm_services.vm_add(env=env, spec=form.to_new_vm(), by=request.user,
                                        idempotency_key=form.cleaned_data["idempotency_key"])
            except Exception as exc:
                show_vm_error(refused_here(exc), form)
            else:
                messages.success(request, f"Adding {op.vm.name} to {env.name} (operation {op.pk}).")
                return HttpResponseRedirect(_env_url(env))
    else:
        form = AddVmForm()
    return render(request, "envs/add_vm.html", {"env": env, "form": form})


# --- sharing (envs/sharing.py) ------------------------------------------------------------


def _sharing_url(env: Env) -> str:
    return _env_url(env) + "#sharing"


def _member_of(env: Env, member_id: int) -> EnvMember:
    return get_object_or_404(EnvMember.objects.select_related("env", "user", "group"), env=env, pk=member_id)


def _sharing_call(request: HttpRequest, call, success: str, back: str) -> bool:
    """Run one sharing service call; its outcome as a message. Whether it was done."""
    try:
        call()
    except Exception as exc:
        messages.error(request, describe(refused_here(exc)))
        return False
    messages.success(request, success)
    return True


@require_POST
@login_required
def env_share(request: HttpRequest, pk: int) -> HttpResponse:
    """Share the Env with `who` (a username, or @group) in `role`."""
    env = _env_for(request, pk)
    who = request.POST.get("who", "").strip()
    role = request.POST.get("role", "")

    def share():
        if who.startswith("@"):
            return sharing.env_share(env=env, group=who[1:], role=role, by=request.user, field="who")
        return sharing.env_share(env=env, user=who or None, role=role, by=request.user, field="who")

    _sharing_call(request, share, f"{env.name} shared with {who} as {role}.", _sharing_url(env))
    return HttpResponseRedirect(_sharing_url(env))


@require_POST
@login_required
def env_member_role(request: HttpRequest, pk: int, member: int) -> HttpResponse:
    env = _env_for(request, pk)
    row = _member_of(env, member)
    role = request.POST.get("role", "")
    _sharing_call(request, lambda: sharing.env_member_set_role(member=row, role=role, by=request.user),
                  f"{row.who} is now {role} on {env.name}.", _sharing_url(env))
    return HttpResponseRedirect(_sharing_url(env))


@require_POST
@login_required
def env_unshare(request: HttpRequest, pk: int, member: int) -> HttpResponse:
    env = _env_for(request, pk)
    row = _member_of(env, member)
    leaving = row.user_id == request.user.pk
    done = _sharing_call(request, lambda: sharing.env_unshare(member=row, by=request.user),
                         f"You left {env.name}." if leaving else f"{row.who} removed from {env.name}.",
                         _sharing_url(env))
    if done and not Env.objects.visible_to(request.user).filter(pk=env.pk).exists():
        return HttpResponseRedirect(reverse("envs:list"))  # no longer theirs to see
    return HttpResponseRedirect(_sharing_url(env))


@require_POST
@login_required
def env_transfer(request: HttpRequest, pk: int) -> HttpResponse:
    """Give the Env to `owner`, one of its members."""
    env = _env_for(request, pk)
    name = request.POST.get("owner", "").strip()

    def transfer():
        return sharing.env_transfer(env=env, new_owner=name, by=request.user)

    _sharing_call(request, transfer, f"{env.name} now belongs to {name}.", _sharing_url(env))
    return HttpResponseRedirect(_sharing_url(env))
