"""Building blocks the apps' admins share: view-only admins and the expiry filter."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin
from django.utils import timezone


class ViewOnlyMixin:
    """Rows whose state only the services change: the admin shows them, never edits them.

    No add, change or delete form (deleting an Env or VM row would leave its
    engine-side VM, addresses and ports behind); the change page becomes a view
    page, and service actions do the work (see ttportal.admin_actions).
    """

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyTabularInline(ViewOnlyMixin, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True


class ExpiryFilter(admin.SimpleListFilter):
    """Expired / ends within 1 h / within 24 h / later (and "never" for nullable fields)."""

    title = "expiry"
    parameter_name = "expiry"
    field: str = ""  # set by expiry_filter()
    nullable: bool = False

    def lookups(self, request, model_admin):
        choices = [
            ("expired", "Expired"),
            ("1h", "Ends within 1 h"),
            ("24h", "Ends within 24 h"),
            ("later", "Later"),
        ]
        if self.nullable:
            choices.append(("never", "Never"))
        return choices

    def queryset(self, request, queryset):
        now = timezone.now()
        f = self.field
        ranges = {
            "expired": {f"{f}__lte": now},
            "1h": {f"{f}__gt": now, f"{f}__lte": now + timedelta(hours=1)},
            "24h": {f"{f}__gt": now, f"{f}__lte": now + timedelta(hours=24)},
            "later": {f"{f}__gt": now + timedelta(hours=24)},
            "never": {f"{f}__isnull": True},
        }
        value = self.value()
        if value in ranges:
            return queryset.filter(**ranges[value])
        return queryset


def expiry_filter(field: str, *, nullable: bool = False) -> type[ExpiryFilter]:
    """An ExpiryFilter on `field` (a DateTimeField: Env.end_at, Snapshot.expires_at)."""
    return type(f"ExpiryFilter_{field}", (ExpiryFilter,), {"field": field, "nullable": nullable})


def format_seconds(seconds: int) -> str:
    """3 d 4 h, 2 h 5 m, 45 s: compact enough for a list column."""
    if seconds <= 0:
        return "0 s"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} m"
    if minutes:
        return f"{minutes} m"
    return f"{secs} s"
