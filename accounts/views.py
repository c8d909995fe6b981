"""The portal's API tokens page (list, create: the secret is shown once, revoke) and
SSH keys page (list, add, delete).

Thin: accounts.services does the work, the same functions the API calls. The
secret exists only in the response to the POST that created it: it is never
stored, put in the session or a flash message, logged, or shown again.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_http_methods, require_POST

from accounts import services
from accounts.forms import SshKeyForm, TokenForm
from accounts.models import ApiToken, SshKey
from ttportal.errors import InvalidInput, RateLimited
from ttportal.portal import rate_limited


def _page(request: HttpRequest, form: TokenForm, **extra) -> HttpResponse:
    tokens = list(ApiToken.objects.visible_to(request.user))
    now = timezone.now()
    for token in tokens:
        token.expired = token.is_expired(now)
    return render(request, "accounts/tokens.html", {"tokens": tokens, "form": form, **extra})


@never_cache  # the answer to a create holds the secret: no cache may keep it
@login_required
@require_http_methods(["GET", "POST"])
@sensitive_variables("secret")
def token_list(request: HttpRequest) -> HttpResponse:
    """Your tokens, and the create form; a successful create shows its secret on this answer only."""
    if request.method != "POST":
        return _page(request, TokenForm())
    form = TokenForm(request.POST)
    if form.is_valid():
        try:
            token, secret = services.token_create(user=request.user, name=form.cleaned_data["name"],
                                                  expires_in=form.expires_in())
        except InvalidInput as exc:
            field = {"name": "name", "expires_in": "expires_in_days"}.get(exc.field or "")
            form.add_error(field, exc.message)
        except RateLimited as exc:
            return rate_limited(request, exc, reverse("accounts:tokens"))
        else:
            # Rendered, not redirected: the secret must not survive this response.
            return _page(request, TokenForm(), new_token=token, secret=secret)
    return _page(request, form)


@require_POST
@login_required
def token_revoke(request: HttpRequest, pk: str) -> HttpResponse:
    token = get_object_or_404(ApiToken.objects.visible_to(request.user), public_id=pk)
    services.token_revoke(token=token, by=request.user)
    messages.success(request, f"Revoked the token {token.name}: it no longer works.")
    return HttpResponseRedirect(reverse("accounts:tokens"))


def _keys_page(request: HttpRequest, form: SshKeyForm) -> HttpResponse:
    keys = SshKey.objects.filter(user=request.user)
    return render(request, "accounts/ssh_keys.html", {"keys": keys, "form": form})


@login_required
@require_http_methods(["GET", "POST"])
def ssh_key_list(request: HttpRequest) -> HttpResponse:
    """Your SSH keys, and the form to add one."""
    if request.method != "POST":
        return _keys_page(request, SshKeyForm())
    form = SshKeyForm(request.POST)
    if form.is_valid():
        try:
            key = services.ssh_key_add(user=request.user, public_key=form.cleaned_data["public_key"],
                                       name=form.cleaned_data["name"])
        except InvalidInput as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, f"Added the key {key.name} ({key.fingerprint}): VMs made from now on "
                             "let you in as tt with it.")
            return HttpResponseRedirect(reverse("accounts:ssh_keys"))
    return _keys_page(request, form)


@require_POST
@login_required
def ssh_key_delete(request: HttpRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(SshKey.objects.filter(user=request.user), pk=pk)
    services.ssh_key_delete(key=key, by=request.user)
    messages.success(request, f"Deleted the key {key.name}: VMs made from now on no longer get it.")
    return HttpResponseRedirect(reverse("accounts:ssh_keys"))
