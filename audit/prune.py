"""The retention: events older than TT_AUDIT_RETENTION_DAYS are removed, by the schedule
`tt: audit prune` (daily), in batches so no long transaction holds the table. The one way
an event leaves the table."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from audit.models import AuditEvent

BATCH = 5000


def prune(now: datetime | None = None, *, days: int | None = None) -> int:
    """Remove the events older than the retention; returns how many went."""
    days = settings.TT_AUDIT_RETENTION_DAYS if days is None else days
    cutoff = (now or timezone.now()) - timedelta(days=days)
    removed = 0
    while True:
        old = AuditEvent.objects.filter(at__lt=cutoff).order_by("at")
        ids = list(old.values_list("pk", flat=True)[:BATCH])
        if not ids:
            return removed
        # QuerySet.delete, not the model's (which refuses): the prune is the exception.
        removed += AuditEvent.objects.filter(pk__in=ids).delete()[0]
