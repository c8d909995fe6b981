"""Small template helpers for the portal pages."""

from __future__ import annotations

from django import template

from ttportal.admin_base import format_seconds

register = template.Library()


@register.filter
def duration(seconds) -> str:
    """3 d 4 h, 2 h 5 m, 45 s."""
    try:
        return format_seconds(int(seconds))
    except (TypeError, ValueError):
        return ""


@register.filter
def mib(value) -> str:
    """256 -> "256 MiB", 2048 -> "2 GiB"."""
    try:
        value = int(value)
    except (TypeError, ValueError):
        return ""
    if value >= 1024 and value % 1024 == 0:
        return f"{value // 1024} GiB"
    return f"{value} MiB"
