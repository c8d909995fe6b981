"""Append-only rows and the retention prune, the one way an event leaves."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit import prune
from audit.models import AuditEvent
from audit.recording import record


def test_an_event_cannot_be_changed_or_deleted_through_the_model(alice):
    event = record("login", by=alice)
    event.verb = "logout"
    with pytest.raises(TypeError):
        event.save()
    with pytest.raises(TypeError):
        event.delete()
    with pytest.raises(TypeError):
        AuditEvent.objects.filter(pk=event.pk).update(verb="logout")
    assert AuditEvent.objects.get(pk=event.pk).verb == "login"


def test_the_database_refuses_an_update(alice):
    # The project runs on SQLite and PostgreSQL only; the migration adds the trigger on both.
    assert connection.vendor in ("sqlite", "postgresql")
    event = record("login", by=alice)
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET verb = 'logout' WHERE id = %s", [event.pk])
    assert AuditEvent.objects.get(pk=event.pk).verb == "login"


def test_the_prune_removes_what_is_past_the_retention_and_keeps_the_rest(alice, settings, time_machine):
    settings.TT_AUDIT_RETENTION_DAYS = 30
    now = timezone.now()
    time_machine.move_to(now - timedelta(days=31))
    old = record("login", by=alice)
    time_machine.move_to(now - timedelta(days=29))
    kept = record("logout", by=alice)
    time_machine.move_to(now)
    assert prune.prune() == 1
    assert list(AuditEvent.objects.values_list("pk", flat=True)) == [kept.pk]
    assert not AuditEvent.objects.filter(pk=old.pk).exists()


def test_the_prune_runs_daily_from_a_migrated_schedule(migrated_schedules):
    assert migrated_schedules["tt: audit prune"]["func"] == "audit.tasks.prune"
    assert migrated_schedules["tt: audit prune"]["schedule_type"] == "D"


@pytest.mark.parametrize(("value", "message"), [("0", "TT_AUDIT_RETENTION_DAYS must be at least 1"),
                                                ("40000", "TT_AUDIT_RETENTION_DAYS must be at most 36500")])
def test_the_retention_is_bounded(value, message):
    from tests.ttportal.test_settings import start_django

    result = start_django(TT_AUDIT_RETENTION_DAYS=value)
    assert result.returncode != 0
    assert message in result.stderr
