"""Notifications: the only code that makes, sends and records them, and that changes a
user's notification settings and webhooks. Every interface (portal, API, tasks) calls these.

    warn_expiring_due        the sweep: Envs whose end is within a warning threshold
    notify_operation_finished  an Env destroyed by expiry, an operation that failed
    send_test_notification   a test notification through one channel
    deliver                  one attempt of one delivery (a task), and its retries
    requeue_due              retries that are due, and deliveries whose task was lost
    extend_by_link           the "extend by 1 h" link of a warning

Each notification is made once: its key is unique in the database, so a sweep run
twice or two workers racing make one row, and only the one that made it enqueues its
deliveries. Each delivery is claimed by a conditional update before its attempt, so
two tasks for it never both send. Nothing here is called inside an operation or the
expiry sweep: they only enqueue (notifications.hooks), and a notification that cannot
be delivered is recorded on its delivery, never raised to them.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.recording import audited
from envs.kinds import EnvKind
from envs.models import Env
from envs.services import env_extend
from notifications import links, messages
from notifications.channels import Outcome
from notifications.channels import email as email_channel
from notifications.channels import webhook as webhook_channel
from notifications.models import Delivery, Notification, NotificationSettings, Webhook
from notifications.queue import deliver_on_commit, enqueue
from operations.models import Operation
from ttportal import limits, ratelimit
from ttportal.errors import ConflictingInput, Forbidden, InvalidInput

log = logging.getLogger(__name__)


# How long the "extend" link adds.
EXTEND_BY = timedelta(hours=1)
# A queued delivery not attempted after this long is enqueued again (its task was lost).
LOST_AFTER = timedelta(minutes=5)


# --- settings and webhooks ------------------------------------------------------------------


@audited("notifications.email")
def email_set(*, user, enabled) -> NotificationSettings:
    """Turn the user's email notifications on or off."""
    if not isinstance(enabled, bool):
        raise InvalidInput("email_enabled", "must be true or false")
    row, _ = NotificationSettings.objects.update_or_create(user=user, defaults={"email_enabled": enabled})
    return row


@audited("webhook.create")
def webhook_create(*, user, endpoint, name=None) -> tuple[Webhook, str]:
    """A new webhook of `user`'s. Returns the row and its secret, shown to them once."""
    endpoint = webhook_channel.check_url(endpoint)
    given = name not in (None, "")
    if given and (not limits.matches(limits.TOKEN_NAME_PATTERN, name) or len(name) > limits.TOKEN_NAME_MAX):
        raise InvalidInput("name", limits.TOKEN_NAME_RULE)
    with transaction.atomic():
        # The user's row, locked: concurrent creates of one user count and check names in turn.
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        mine = Webhook.objects.filter(user=user)
        if mine.count() >= limits.WEBHOOKS_MAX:
            raise ConflictingInput("endpoint", f"you have {limits.WEBHOOKS_MAX} webhooks, the most one keeps")
        if given:
            if mine.filter(name=name).exists():
                raise ConflictingInput("name", f"you already have a webhook named {name!r}")
        else:
            name = _free_name(mine, (urlsplit(endpoint).hostname or "webhook")[: limits.TOKEN_NAME_MAX - 5])
        secret = webhook_channel.new_secret()
        try:
            with transaction.atomic():
                hook = Webhook.objects.create(user=user, name=name, endpoint=endpoint, secret=secret)
        except IntegrityError:  # a concurrent create of the same name (where rows are not locked)
            raise ConflictingInput("name", f"you already have a webhook named {name!r}") from None
    return hook, secret


def _free_name(mine, base: str) -> str:
    taken = set(mine.values_list("name", flat=True))
    return next(n for n in [base, *(f"{base} ({i})" for i in range(2, limits.WEBHOOKS_MAX + 2))]
                if n not in taken)


@audited("webhook.delete")
def webhook_delete(*, webhook: Webhook, by) -> None:
    """Stop sending to it (deliveries already recorded keep its URL)."""
    if by is None or webhook.user_id != by.pk:
        raise Forbidden("you can only delete your own webhooks")
    Webhook.objects.filter(pk=webhook.pk).delete()


def send_test_notification(*, user, channel: str, webhook: Webhook | None = None) -> Delivery:
    """A test notification to `user` through one channel, the way real ones go (a task,
    the same sending code, the same delivery record). Sent even with email turned off:
    it was asked for. How often is bound per channel (TT_RATE_TEST_NOTIFICATION: email,
    and webhooks together)."""
    if channel == Delivery.Channel.WEBHOOK:
        if webhook is None or webhook.user_id != user.pk:
            raise Forbidden("you can only test your own webhooks")
    elif channel != Delivery.Channel.EMAIL:
        raise InvalidInput("channel", "must be email or webhook")
    now = timezone.now()
    label = "email address" if channel == Delivery.Channel.EMAIL else f"webhook {webhook.name}"
    with transaction.atomic():
        ratelimit.take("test_notification", user=user, key=str(channel))
        notification = Notification.objects.create(
            key=f"test:{uuid.uuid4().hex}", kind=Notification.Kind.TEST, user=user, created_at=now,
            payload=messages.test(label),
        )
        if channel == Delivery.Channel.EMAIL:
            delivery = _email_delivery(notification, user, now, forced=True)
        else:
            delivery = _webhook_delivery(notification, webhook, now)
    deliver_on_commit([delivery.pk] if delivery.status == Delivery.Status.PENDING else [])
    return delivery


# --- making notifications ------------------------------------------------------------------


def warn_expiring_due(now: datetime | None = None, limit: int = 500) -> list[Notification]:
    """The sweep: warn the owner of each live Env whose end is within a threshold of
    TT_EXPIRY_WARNINGS and who was not warned for it (or a nearer one) before this end.

    When several thresholds are due at once (an Env made or moved to end soon, a sweep
    that did not run), only the nearest is sent: "1 h left" after "10 min left" would
    be wrong. A threshold whose moment falls before the Env's start is skipped: an Env
    made to live 1 h gets no "1 h left" at its birth."""
    now = now or timezone.now()
    thresholds = settings.TT_EXPIRY_WARNINGS
    if not thresholds:
        return []
    horizon = now + timedelta(seconds=max(thresholds))
    envs = (Env.objects.filter(status=Env.Status.ACTIVE, end_at__gt=now, end_at__lte=horizon)
            .select_related("owner").order_by("end_at")[:limit])
    made = []
    for env in envs:
        due = [t for t in thresholds if env.start_at < env.end_at - timedelta(seconds=t) <= now]
        if not due:
            continue
        nearest = min(due)
        if Notification.objects.filter(env=env, kind=Notification.Kind.ENV_EXPIRING, end_at=env.end_at,
                                       before__lte=nearest).exists():
            continue
        notification = _notify(
            user=env.owner, kind=Notification.Kind.ENV_EXPIRING, now=now, env=env, end_at=env.end_at,
            before=nearest,
            key=f"env.expiring:env={env.pk}:end={env.end_at.isoformat()}:before={nearest}",
            payload=lambda n, env=env: messages.expiring(
                env, now=now, extend_url=messages.link(_extend_path(links.make(n.pk, env.end_at)))),
        )
        if notification is not None:
            made.append(notification)
    return made


def _extend_path(token: str) -> str:
    from django.urls import reverse

    return reverse("notifications:extend", args=[token])


def notify_operation_finished(operation_id: int) -> Notification | None:
    """An operation ended (notifications.hooks): tell the Env's owner it failed, or that
    their Env was destroyed by expiry."""
    op = Operation.objects.select_related("env__owner").filter(pk=operation_id).first()
    if op is None or op.env is None:
        return None
    env, now = op.env, timezone.now()
    if op.status == Operation.Status.FAILED:
        return _notify(user=env.owner, kind=Notification.Kind.OPERATION_FAILED, now=now, env=env,
                       operation=op, key=f"operation.failed:op={op.pk}",
                       payload=lambda n: messages.failed(env, op))
    if op.status == Operation.Status.SUCCEEDED and op.kind == EnvKind.ENV_EXPIRE:
        return _notify(user=env.owner, kind=Notification.Kind.ENV_EXPIRED, now=now, env=env, operation=op,
                       key=f"env.expired:env={env.pk}", payload=lambda n: messages.expired(env, op))
    return None


def _notify(*, user, kind: str, key: str, now: datetime, payload, env=None, operation=None, end_at=None,
            before=None) -> Notification | None:
    """Make the notification and its deliveries, and enqueue them on commit; None when it
    was made already (the key is taken: by an earlier sweep, or a racing worker)."""
    try:
        with transaction.atomic():
            notification = Notification.objects.create(
                key=key, kind=kind, user=user, env=env, operation=operation, end_at=end_at, before=before,
                created_at=now,
            )
            notification.payload = payload(notification)
            notification.save(update_fields=["payload"])
            deliveries = [_email_delivery(notification, user, now)]
            deliveries += [_webhook_delivery(notification, hook, now) for hook in user.webhooks.all()]
    except IntegrityError:
        return None
    deliver_on_commit([d.pk for d in deliveries if d.status == Delivery.Status.PENDING])
    return notification


def _email_delivery(notification: Notification, user, now: datetime, *, forced: bool = False) -> Delivery:
    address = (user.email or "").strip()
    skipped = ""
    if not forced and not NotificationSettings.of(user).email_enabled:
        skipped = "email notifications are turned off"
    elif not address:
        skipped = "the user has no email address"
    return Delivery.objects.create(
        notification=notification, channel=Delivery.Channel.EMAIL, target=address, created_at=now,
        status=Delivery.Status.SKIPPED if skipped else Delivery.Status.PENDING, last_error=skipped,
        next_attempt_at=None if skipped else now,
    )


def _webhook_delivery(notification: Notification, hook: Webhook, now: datetime) -> Delivery:
    return Delivery.objects.create(
        notification=notification, channel=Delivery.Channel.WEBHOOK, webhook=hook, target=hook.endpoint,
        created_at=now, next_attempt_at=now,
    )


# --- delivering -------------------------------------------------------------------------------


def deliver(delivery_id: int, now: datetime | None = None) -> Delivery | None:
    """One attempt of the delivery, if it is waiting and due. Claimed first by one
    conditional UPDATE, so of two tasks for it only one sends. A failure that may pass
    waits TT_NOTIFY_RETRY_BASE * 2^(attempt - 1) s (or the receiver's longer
    Retry-After) for the next attempt, up to TT_NOTIFY_MAX_ATTEMPTS; any other ends it."""
    now = now or timezone.now()
    waiting = Delivery.objects.filter(pk=delivery_id, status__in=Delivery.WAITING, next_attempt_at__lte=now)
    claimed = waiting.update(status=Delivery.Status.SENDING, attempts=F("attempts") + 1, last_attempt_at=now)
    delivery = Delivery.objects.select_related("notification__user", "webhook").filter(pk=delivery_id).first()
    if not claimed or delivery is None:
        return delivery
    outcome = _attempt(delivery)
    fields: dict = {"response_status": outcome.status, "last_error": outcome.error[:4000]}
    if outcome.delivered:
        fields.update(status=Delivery.Status.DELIVERED, delivered_at=now, next_attempt_at=None)
    elif outcome.retry and delivery.attempts < settings.TT_NOTIFY_MAX_ATTEMPTS:
        wait = settings.TT_NOTIFY_RETRY_BASE * 2 ** (delivery.attempts - 1)
        wait = max(wait, outcome.retry_after or 0)
        fields.update(status=Delivery.Status.RETRYING, next_attempt_at=now + timedelta(seconds=wait))
    else:
        fields.update(status=Delivery.Status.FAILED, next_attempt_at=None)
        if outcome.retry:
            fields["last_error"] = f"{outcome.error} (gave up after {delivery.attempts} attempts)"[:4000]
    Delivery.objects.filter(
        pk=delivery.pk, status=Delivery.Status.SENDING, attempts=delivery.attempts,
    ).update(**fields)
    delivery.refresh_from_db()
    if delivery.status == Delivery.Status.FAILED:
        log.warning("delivery %s (%s to %s) failed: %s", delivery.pk, delivery.channel, delivery.target,
                    delivery.last_error)
    return delivery


def _attempt(delivery: Delivery) -> Outcome:
    notification = delivery.notification
    try:
        if delivery.channel == Delivery.Channel.EMAIL:
            subject, text = messages.email(notification)
            return email_channel.send(delivery.target, subject=subject, text=text, event=notification.kind,
                                      delivery_id=delivery.pk)
        if delivery.webhook is None:
            return Outcome(False, error="the webhook was deleted")
        return webhook_channel.send(delivery.target, secret=delivery.webhook.secret,
                                    body=messages.body(notification, delivery.pk), event=notification.kind,
                                    delivery_id=delivery.pk)
    except Exception as exc:  # a bug or a backend we do not know: recorded, tried again
        log.exception("delivery %s crashed", delivery.pk)
        return Outcome(False, retry=True, error=email_channel.redact(f"{exc.__class__.__name__}: {exc}"))


def requeue_due(now: datetime | None = None, limit: int = 500) -> int:
    """Enqueue the deliveries whose next attempt is due, and those whose task was lost
    (queued long ago and never attempted, or attempted by a worker that died mid-way:
    that attempt counts, and the receiver may see it twice, with the same X-TT-Delivery)."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.Q_CLUSTER["timeout"] + 60)
    sending = Delivery.objects.filter(status=Delivery.Status.SENDING, last_attempt_at__lte=stale)
    for delivery in sending[:limit]:
        gave_up = delivery.attempts >= settings.TT_NOTIFY_MAX_ATTEMPTS
        Delivery.objects.filter(
            pk=delivery.pk, status=Delivery.Status.SENDING, attempts=delivery.attempts,
        ).update(
            status=Delivery.Status.FAILED if gave_up else Delivery.Status.RETRYING,
            next_attempt_at=None if gave_up else now,
            last_error="its worker stopped during the attempt",
        )
    lost = now - LOST_AFTER
    due = Delivery.objects.filter(
        Q(status=Delivery.Status.RETRYING, next_attempt_at__lte=now)
        | Q(status=Delivery.Status.PENDING, queued_at__lte=lost)
        | Q(status=Delivery.Status.PENDING, queued_at__isnull=True, created_at__lte=lost)
    ).order_by("next_attempt_at", "pk").values_list("pk", flat=True)[:limit]
    ids = list(due)
    Delivery.objects.filter(pk__in=ids).update(queued_at=now)
    for pk in ids:
        enqueue("notifications.tasks.deliver", pk, name=f"delivery-{pk}")
    return len(ids)


# --- the "extend by 1 h" link -------------------------------------------------------------------


def link_target(token: str, now: datetime | None = None) -> Notification:
    """The warning the link belongs to, while the link still works (links.LinkRefused if not)."""
    now = now or timezone.now()
    notification = (Notification.objects.select_related("env__owner")
                    .filter(pk=links.read(token, now), kind=Notification.Kind.ENV_EXPIRING).first())
    if notification is None or notification.env is None:
        raise links.LinkRefused(410, "This link no longer works", "The notification it came with is gone.")
    if notification.extend_used_at is not None:
        raise links.LinkRefused(
            410, "This link was used already",
            f"It extended {notification.env.name} at {messages.when(notification.extend_used_at)}; "
            "each link works once. Extend the Env from its page for more.")
    if not notification.env.is_live or notification.env.status != Env.Status.ACTIVE:
        env = notification.env
        raise links.LinkRefused(410, "This Env is gone", f"{env.name} is {env.status}.")
    return notification


def extend_by_link(*, token: str, now: datetime | None = None) -> Operation:
    """Extend the warning's Env by one hour, as its owner (the link is their capability),
    once: the link is spent in the same transaction, so of two clicks one extends; a
    refusal (past the longest lifetime, say) spends nothing."""
    now = now or timezone.now()
    with transaction.atomic():
        notification = link_target(token, now)
        spent = Notification.objects.filter(pk=notification.pk, extend_used_at__isnull=True).update(
            extend_used_at=now)
        if not spent:
            raise links.LinkRefused(410, "This link was used already", "Each link works once.")
        env = notification.env
        return env_extend(env=env, by=env.owner, extend_by=EXTEND_BY)
