"""What a notification says: the facts (its payload, which is also the webhook body) and
the email made of them. Built when the notification is made, so every channel and every
attempt tells the same thing."""

from __future__ import annotations

import json
from datetime import datetime

from django.conf import settings
from django.urls import reverse

SITE = "TT Portal"


def link(path: str) -> str:
    """An absolute link into the portal (TT_PUBLIC_URL)."""
    return settings.TT_PUBLIC_URL + path


def when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def rfc3339(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def human(seconds: float) -> str:
    """A duration to the nearest minute: "1 h", "10 min", "1 h 30 min"."""
    minutes = max(0, round(seconds / 60))
    if not minutes:
        return "less than a minute"
    hours, minutes = divmod(minutes, 60)
    return " ".join(part for part in (f"{hours} h" if hours else "", f"{minutes} min" if minutes else "")
                    if part)


def env_facts(env) -> dict:
    return {
        "id": env.pk,
        "name": env.name,
        "owner": env.owner.get_username(),
        "status": env.status,
        "end_at": rfc3339(env.end_at),
        "url": link(reverse("envs:detail", args=[env.pk])),
    }


def expiring(env, *, now: datetime, extend_url: str) -> dict:
    left = (env.end_at - now).total_seconds()
    return {
        "summary": f"Env {env.name} expires in {human(left)}, at {when(env.end_at)}",
        "env": env_facts(env),
        "expires_in": max(0, int(left)),
        "extend_url": extend_url,
    }


def expired(env, op) -> dict:
    return {
        "summary": f"Env {env.name} was destroyed: its end ({when(env.end_at)}) had passed",
        "env": {**env_facts(env), "destroyed_at": rfc3339(env.destroyed_at)},
        "reason": "expired",
        "operation": operation_facts(op),
    }


def operation_facts(op) -> dict:
    return {
        "id": op.pk,
        "kind": op.kind,
        "kind_label": op.get_kind_display(),
        "target": op.target,
        "status": op.status,
        "error_code": op.error_code,
        "error_message": op.error_message,
        "url": link(f"/api/operations/{op.pk}/"),
    }


def failed(env, op) -> dict:
    code = f" ({op.error_code})" if op.error_code else ""
    return {
        "summary": f"{op.get_kind_display()} failed on {op.target or env.name}{code}",
        "env": env_facts(env),
        "operation": operation_facts(op),
    }


def test(channel: str) -> dict:
    return {
        "summary": f"A test notification to your {channel}: this channel works",
        "channel": channel,
    }


def body(notification, delivery_id: int) -> bytes:
    """The webhook body: the same bytes on every attempt of one delivery."""
    data = {
        "event": notification.kind,
        "delivery": delivery_id,
        "notification": notification.pk,
        "created_at": rfc3339(notification.created_at),
        "user": notification.user.get_username(),
        **notification.payload,
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def email(notification) -> tuple[str, str]:
    """(subject, text) of the notification's email."""
    p = notification.payload
    user = notification.user.get_username()
    env = p.get("env") or {}
    lines = [f"Hello {user},", ""]
    kind = notification.kind
    if kind == "env.expiring":
        subject = f"Env {env['name']} expires in {human(p['expires_in'])}"
        lines += [
            f"Your Env {env['name']} expires in {human(p['expires_in'])}, at {when_text(env['end_at'])}.",
            "Then its VMs are destroyed, with their disks and snapshots.",
            "",
            "To keep it one more hour, open this link and confirm (it works once, until the Env's end):",
            f"  {p['extend_url']}",
            "",
            f"The Env: {env['url']}",
        ]
    elif kind == "env.expired":
        subject = f"Env {env['name']} was destroyed: its time ran out"
        lines += [
            f"Your Env {env['name']} reached its end ({when_text(env['end_at'])}) and was destroyed",
            "by expiry, with its VMs. Its record and operations stay on the Env page:",
            f"  {env['url']}",
        ]
    elif kind == "operation.failed":
        op = p["operation"]
        subject = p["summary"]
        lines += [
            f"An operation on your Env {env['name']} failed.",
            "",
            f"  Operation:  {op['kind_label']} ({op['kind']}, #{op['id']})",
            f"  Target:     {op['target']}",
            f"  Error code: {op['error_code'] or '-'}",
            f"  Message:    {op['error_message'] or '-'}",
            "",
            f"The Env: {env['url']}",
        ]
    else:
        subject = "Test notification"
        lines += [f"{p.get('summary', 'A test notification')}.", "Nothing else to do."]
    lines += ["", "-- ", f"{SITE}. Your notification settings: {link(reverse('notifications:settings'))}"]
    return f"{SITE}: {subject}", "\n".join(lines) + "\n"


def when_text(stamp: str | None) -> str:
    if not stamp:
        return "-"
    return when(datetime.fromisoformat(stamp.replace("Z", "+00:00")))
