"""Portal pages for blueprints (envs/blueprints.py): the list (mine, shared with me,
published) with a form to save a file, one blueprint's page (its file, Launch, and for its
owner Edit, Share, Delete; Publish for operators), and "Save as blueprint" of an Env.

Thin, like envs/views.py: every lookup goes through visible_to (a blueprint not shared
with you is a 404), every change through the services, whose Forbidden is a 403 here.
"""

from __future__ import annotations

import re

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from envs import blueprints, envfiles
from envs.forms import BlueprintForm
from envs.models import Blueprint
from envs.views import _env_for, _env_url
from ttportal import permissions
from ttportal.errors import RateLimited
from ttportal.portal import back_url, describe, rate_limited, refused_here


def _blueprint_for(request: HttpRequest, pk: int) -> Blueprint:
    return get_object_or_404(Blueprint.objects.visible_to(request.user).select_related("owner"), pk=pk)


def _blueprint_url(blueprint: Blueprint) -> str:
    return reverse("envs:blueprint", args=[blueprint.pk])


def _names(text: str) -> list[str]:
    """"bob, carol dave" -> ["bob", "carol", "dave"]."""
    return [name for name in re.split(r"[\s,]+", text or "") if name]


def _act(request: HttpRequest, call, success: str, back: str) -> HttpResponse:
    """One service call that answers at once (no operation): a message, then back."""
    try:
        call()
    except Exception as exc:
        error = refused_here(exc)
        if isinstance(error, RateLimited):
            return rate_limited(request, error, back)
        messages.error(request, describe(error))
    else:
        messages.success(request, success)
    return HttpResponseRedirect(back)


@login_required
@require_http_methods(["GET", "POST"])
def blueprint_list(request: HttpRequest) -> HttpResponse:
    """Mine, shared with me, published; and a form to save a file as a new blueprint (the New
    Env page's import card posts its file here too)."""
    form = BlueprintForm(prefix="file")
    if request.method == "POST":
        form = BlueprintForm(request.POST, request.FILES, prefix="file")
        try:
            saved = form.save(by=request.user)
        except Exception as exc:
            raise refused_here(exc) from exc
        if saved is not None:
            messages.success(request, f"Blueprint {saved.name} saved.")
            return HttpResponseRedirect(_blueprint_url(saved))
    user = request.user
    seen = list(Blueprint.objects.visible_to(user).select_related("owner")
                .order_by("name", "owner__username"))
    with_me = Q(shared_with_users=user) | Q(shared_with_groups__in=user.groups.all())
    shared = set(Blueprint.objects.filter(with_me).values_list("pk", flat=True))
    return render(request, "envs/blueprints.html", {
        "form": form,
        "mine": [bp for bp in seen if bp.owner_id == user.pk],
        "shared": [bp for bp in seen if bp.owner_id != user.pk and bp.pk in shared],
        "published": [bp for bp in seen if bp.owner_id != user.pk and bp.published and bp.pk not in shared],
        "others": [bp for bp in seen if bp.owner_id != user.pk and not bp.published and bp.pk not in shared],
        "max_blueprints": blueprints.max_per_user(),
    })


@login_required
@require_http_methods(["GET", "POST"])
def blueprint_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Its file and Launch; for its owner (or staff who may change it) the edit form (POST)."""
    blueprint = _blueprint_for(request, pk)
    initial = {"name": blueprint.name, "description": blueprint.description, "text": blueprint.text}
    form = BlueprintForm(prefix="file", initial=initial)
    if request.method == "POST":
        form = BlueprintForm(request.POST, request.FILES, prefix="file")
        try:
            saved = form.save(by=request.user, blueprint=blueprint)
        except Exception as exc:
            raise refused_here(exc) from exc
        if saved is not None:
            messages.success(request, f"Blueprint {saved.name} saved.")
            return HttpResponseRedirect(_blueprint_url(saved))
        blueprint.refresh_from_db()
    user = request.user
    return render(request, "envs/blueprint.html", {
        "blueprint": blueprint, "form": form,
        "mine": blueprint.owner_id == user.pk,
        "may_change": blueprint.owner_id == user.pk or permissions.may(user, "blueprint_change"),
        "may_publish": permissions.may(user, "blueprint_publish"),
        "shared_users": ", ".join(u.get_username() for u in blueprint.shared_with_users.order_by("username")),
        "shared_groups": ", ".join(g.name for g in blueprint.shared_with_groups.order_by("name")),
    })


@login_required
@require_GET
def blueprint_download(request: HttpRequest, pk: int) -> HttpResponse:
    """The blueprint's file, as tt.yaml (`tt env up -f` takes it)."""
    blueprint = _blueprint_for(request, pk)
    response = HttpResponse(blueprint.text, content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{blueprint.name}.tt.yaml"'
    return response


@require_POST
@login_required
def blueprint_launch(request: HttpRequest, pk: int) -> HttpResponse:
    """One click: a new Env of the signed-in user's from the file (named as the file names
    it, or as the optional `name` field says); on to the new Env's page."""
    blueprint = _blueprint_for(request, pk)
    back = back_url(request, _blueprint_url(blueprint))
    try:
        op = blueprints.blueprint_launch(blueprint=blueprint, by=request.user,
                                         name=request.POST.get("name", "").strip() or None,
                                         idempotency_key=request.POST.get("idempotency_key", ""))
    except Exception as exc:
        error = refused_here(exc)
        if isinstance(error, RateLimited):
            return rate_limited(request, error, back)
        messages.error(request, f"Not launched: {describe(error)}")
        return HttpResponseRedirect(back)
    messages.success(request, f"Env {op.env.name}, from the blueprint {blueprint.name}: creating its VMs "
                              f"(operation {op.pk}).")
    return HttpResponseRedirect(_env_url(op.env))


@require_POST
@login_required
def blueprint_share(request: HttpRequest, pk: int) -> HttpResponse:
    """Share it read-only with exactly the users and groups named (comma- or space-separated)."""
    blueprint = _blueprint_for(request, pk)
    return _act(request, lambda: blueprints.blueprint_share(
        blueprint=blueprint, by=request.user, users=_names(request.POST.get("users", "")),
        groups=_names(request.POST.get("groups", ""))), f"Sharing of {blueprint.name} saved.",
        _blueprint_url(blueprint))


@require_POST
@login_required
def blueprint_publish(request: HttpRequest, pk: int) -> HttpResponse:
    """Publish it to everyone (published=1) or withdraw it (0): operators only."""
    blueprint = _blueprint_for(request, pk)
    publish = request.POST.get("published") == "1"
    return _act(request, lambda: blueprints.blueprint_publish(blueprint=blueprint, by=request.user,
                                                              published=publish),
                f"{blueprint.name} {'published to everyone' if publish else 'no longer published'}.",
                _blueprint_url(blueprint))


@require_POST
@login_required
def blueprint_delete(request: HttpRequest, pk: int) -> HttpResponse:
    blueprint = _blueprint_for(request, pk)
    blueprints_url = reverse("envs:blueprints")
    response = _act(request, lambda: blueprints.blueprint_delete(blueprint=blueprint, by=request.user),
                    f"Blueprint {blueprint.name} deleted.", blueprints_url)
    if Blueprint.objects.filter(pk=blueprint.pk).exists():  # refused: back to it
        return HttpResponseRedirect(_blueprint_url(blueprint))
    return response


@require_POST
@login_required
def env_save_blueprint(request: HttpRequest, pk: int) -> HttpResponse:
    """"Save as blueprint" on the Env page: the Env's exported file (as "Download as tt.yaml"
    gives it), saved as a blueprint of the signed-in user's under `name` (default: the Env's)."""
    env = _env_for(request, pk)
    try:
        saved = blueprints.blueprint_save(by=request.user, text=envfiles.text_of(env),
                                          name=request.POST.get("name", "").strip() or env.name)
    except Exception as exc:
        messages.error(request, f"Not saved as a blueprint: {describe(refused_here(exc))}")
        return HttpResponseRedirect(_env_url(env))
    messages.success(request, f"Saved as the blueprint {saved.name}: launch copies of it from here.")
    return HttpResponseRedirect(_blueprint_url(saved))
