"""The portal's notification pages: your settings (email on or off, webhooks: add with
the secret shown once, delete, test) and the "extend by 1 h" link of a warning.

Thin: notifications.services does the work, the same functions the API calls.
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

from notifications import services
from notifications.forms import EmailForm, WebhookForm
from notifications.links import LinkRefused
from notifications.models import Delivery, NotificationSettings, Webhook
from ttportal.errors import InvalidInput, RateLimited, TTError
from ttportal.portal import describe, rate_limited, refused_here

# How many of the user's latest deliveries the page lists.
DELIVERIES_SHOWN = 20


def _page(request: HttpRequest, form: WebhookForm, **extra) -> HttpResponse:
    user = request.user
    prefs = NotificationSettings.of(user)
    return render(request, "notifications/settings.html", {
        "prefs": prefs,
        "email_form": EmailForm(initial={"email_enabled": prefs.email_enabled}),
        "webhooks": Webhook.objects.filter(user=user),
        "form": form,
        "deliveries": Delivery.objects.filter(notification__user=user).select_related("notification")
        [:DELIVERIES_SHOWN],
        **extra,
    })


def _back() -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("notifications:settings"))


@never_cache  # the answer to an add holds the secret: no cache may keep it
@login_required
@require_http_methods(["GET", "POST"])
@sensitive_variables("secret")
def notification_settings(request: HttpRequest) -> HttpResponse:
    """Your notification settings; a POST adds a webhook and shows its secret on this answer only."""
    if request.method != "POST":
        return _page(request, WebhookForm())
    form = WebhookForm(request.POST)
    if form.is_valid():
        try:
            hook, secret = services.webhook_create(user=request.user, endpoint=form.cleaned_data["endpoint"],
                                                   name=form.cleaned_data["name"])
        except InvalidInput as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            # Rendered, not redirected: the secret must not survive this response.
            return _page(request, WebhookForm(), new_webhook=hook, secret=secret)
    return _page(request, form)


@require_POST
@login_required
def email_settings(request: HttpRequest) -> HttpResponse:
    form = EmailForm(request.POST)
    form.is_valid()  # a checkbox: absent is off
    row = services.email_set(user=request.user, enabled=bool(form.cleaned_data.get("email_enabled")))
    messages.success(request, "Email notifications are on." if row.email_enabled else
                     "Email notifications are off.")
    return _back()


def _sent(request: HttpRequest, delivery: Delivery) -> None:
    if delivery.status == Delivery.Status.SKIPPED:
        messages.error(request, f"Not sent: {delivery.last_error}.")
    else:
        messages.success(request, f"Test notification queued to {delivery.target}; its delivery shows below "
                         "(reload to see how it went).")


def _test(request: HttpRequest, **target) -> HttpResponse:
    try:
        delivery = services.send_test_notification(user=request.user, **target)
    except RateLimited as exc:
        return rate_limited(request, exc, _back().url)
    _sent(request, delivery)
    return _back()


@require_POST
@login_required
def email_test(request: HttpRequest) -> HttpResponse:
    return _test(request, channel=Delivery.Channel.EMAIL)


def _webhook(request: HttpRequest, pk: int) -> Webhook:
    # Personal, like tokens: staff see and delete others' webhooks in the admin only.
    return get_object_or_404(Webhook.objects.filter(user=request.user), pk=pk)


@require_POST
@login_required
def webhook_test(request: HttpRequest, pk: int) -> HttpResponse:
    return _test(request, channel=Delivery.Channel.WEBHOOK, webhook=_webhook(request, pk))


@require_POST
@login_required
def webhook_delete(request: HttpRequest, pk: int) -> HttpResponse:
    hook = _webhook(request, pk)
    services.webhook_delete(webhook=hook, by=request.user)
    messages.success(request, f"Deleted the webhook {hook.name}: nothing more is sent to it.")
    return _back()


# --- the link of an expiry warning ----------------------------------------------------------


@never_cache
@require_http_methods(["GET", "POST"])
def extend(request: HttpRequest, token: str) -> HttpResponse:
    """GET: what the link would do, and a button. POST (CSRF-checked): extend the Env by
    one hour as its owner, once. No sign-in needed: the token is the capability (see
    notifications/links.py). A GET never changes anything."""
    now = timezone.now()
    try:
        notification = services.link_target(token, now)
        if request.method == "POST":
            services.extend_by_link(token=token, now=now)
            notification.env.refresh_from_db()
            return _link_page(request, "notifications/extended.html", {"env": notification.env})
    except LinkRefused as exc:
        return _link_page(request, "notifications/link_refused.html",
                          {"title": exc.title, "message": exc.message}, status=exc.status)
    except TTError as exc:  # refused by env_extend: past the longest lifetime, too many extends, say
        limited = isinstance(exc, RateLimited)
        response = _link_page(request, "notifications/link_refused.html",
                              {"title": "The Env was not extended", "message": describe(refused_here(exc))},
                              status=429 if limited else 409)
        if limited:
            response["Retry-After"] = str(exc.retry_after)
        return response
    env = notification.env
    return _link_page(request, "notifications/extend.html", {
        "env": env, "left": env.seconds_left(now), "new_end": max(env.end_at, now) + services.EXTEND_BY,
    })


def _link_page(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    response = render(request, template, context, status=status)
    # The token is in this page's URL: never hand it to another site.
    response["Referrer-Policy"] = "no-referrer"
    return response
