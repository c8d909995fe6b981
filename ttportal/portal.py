"""What the portal's action views share: call a service, say what happened, go back.

Every action is a POST form that works without JavaScript: the service's
answer becomes a flash message and the browser is redirected to where the
form came from (a safe `next`), or to the object's page. A refusal says what
the API and the admin say (ttportal.refusals). A rate limit's refusal is a 429
page with Retry-After, as in the API (a redirect would hide the status), saying
the same and linking back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from ttportal.errors import CooldownActive, Forbidden, RateLimited, TTError
from ttportal.refusals import refused


def describe(exc: TTError) -> str:
    """A refusal as one sentence for a flash message."""
    if isinstance(exc, CooldownActive):
        return f"Not yet: another operation ran on this Env moments ago; available in {exc.retry_after} s."
    if isinstance(exc, RateLimited):
        return f"Not now: {exc.message}."
    return str(exc)


def rate_limited(request: HttpRequest, error: RateLimited, back: str) -> HttpResponse:
    """The portal's answer to a rate limit: the refusal as a message on a 429 page with
    Retry-After, and a link back to where the form came from."""
    messages.error(request, describe(error))
    response = render(request, "rate_limited.html", {"back": back, "error": error}, status=429)
    response["Retry-After"] = str(error.retry_after)
    return response


def back_url(request: HttpRequest, default: str) -> str:
    """Where the form came from (its `next` field) if that is on this site, else `default`."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def refused_here(exc: Exception) -> TTError:
    """The refusal a portal page shows for `exc`. The service's own Forbidden is a 403
    (querysets already hide what is not yours as a 404); what is no refusal is raised."""
    error = refused(exc)
    if isinstance(error, Forbidden):
        raise PermissionDenied(error.message) from exc
    return error


def call_and_redirect(
    request: HttpRequest, call: Callable[[], Any], success: str, default: str
) -> HttpResponse:
    """Run one service call for the signed-in user and redirect back with its outcome."""
    try:
        op = call()
    except Exception as exc:
        error = refused_here(exc)
        if isinstance(error, RateLimited):
            return rate_limited(request, error, back_url(request, default))
        messages.error(request, describe(error))
    else:
        if op is None:  # the service found it so already: nothing was recorded
            messages.info(request, "Nothing to do: it is so already.")
            return HttpResponseRedirect(back_url(request, default))
        done = op.is_done  # an Operation: the kernel names no app above it
        messages.success(request, success if done else f"{success} (operation {op.pk} queued).")
    return HttpResponseRedirect(back_url(request, default))


def post_action(
    find: Callable[[HttpRequest, int], Any],
    service: Callable[..., Any],  # returns an Operation
    *,
    target: str,
    says: Callable[[Any], str],
    back: Callable[[Any], str],
    fields: Callable[[HttpRequest], dict] | None = None,
):
    """A POST-only portal view for one service call on one object.

    `find(request, pk)` looks the object up among what the user may see (anyone
    else's is a 404); the service gets it as `target`, `by=request.user` and the
    keyword arguments `fields(request)` parses from the form; `says(obj)` is the
    success message and `back(obj)` where to go when the form gave no `next`.
    """

    @require_POST
    @login_required
    def view(request: HttpRequest, pk: int) -> HttpResponse:
        obj = find(request, pk)
        extra = fields(request) if fields else {}
        return call_and_redirect(request, lambda: service(**{target: obj}, **extra, by=request.user),
                                 says(obj), back(obj))

    view.__doc__ = f"POST: {service.__name__} on the {target}, then back with a message."
    return view
