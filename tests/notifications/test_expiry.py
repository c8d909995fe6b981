"""Expiry warnings (1 h and 10 min before the end by default), each sent once however
often the sweep runs, again before a new end after an extend; and the notice that an
Env was destroyed by expiry. Time is frozen; email goes to Django's locmem outbox."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.db import IntegrityError, transaction

from envs.services import env_expire_due, env_extend
from notifications import services
from notifications.models import Delivery, Notification, NotificationSettings
from tests.support import T0

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)

pytestmark = pytest.mark.usefixtures("frozen_clock")


@pytest.fixture
def env(alice, make_env):
    """Alice's Env, made at T0 for 4 h: its end is T0 + 4 h."""
    env = make_env(alice, lifetime=4 * 3600)
    assert env.end_at == T0 + 4 * HOUR
    return env


def subjects() -> list[str]:
    return [m.subject for m in mail.outbox]


def test_it_warns_an_hour_and_ten_minutes_before_the_end_once_each(env, time_machine, sweep):
    end = env.end_at
    # Every minute from the start to the end, each sweep run three times (two workers, a retry).
    moment = T0
    sent_at = {}
    while moment < end:
        time_machine.move_to(moment)
        for _ in range(3):
            sweep()
        for subject in subjects():
            sent_at.setdefault(subject, moment)
        moment += MINUTE
    assert subjects() == ["TT Portal: Env demo expires in 1 h", "TT Portal: Env demo expires in 10 min"]
    assert sent_at == {
        "TT Portal: Env demo expires in 1 h": end - HOUR,
        "TT Portal: Env demo expires in 10 min": end - 10 * MINUTE,
    }
    assert mail.outbox[0].to == ["alice@example.com"]
    assert Notification.objects.filter(kind="env.expiring").count() == 2
    assert set(Delivery.objects.values_list("channel", "status", "attempts")) == {("email", "delivered", 1)}


def test_the_warning_says_when_and_links_the_env_and_an_extend_link(env, time_machine, sweep):
    time_machine.move_to(env.end_at - HOUR)
    sweep()
    (message,) = mail.outbox
    assert "Your Env demo expires in 1 h, at 2030-01-01 16:00 UTC." in message.body
    assert f"http://127.0.0.1:8000/envs/{env.pk}/" in message.body
    notification = Notification.objects.get()
    extend_url = notification.payload["extend_url"]
    assert extend_url.startswith("http://127.0.0.1:8000/notifications/extend/")
    assert extend_url in message.body
    assert message.extra_headers["X-TT-Event"] == "env.expiring"
    assert (notification.env, notification.end_at, notification.before) == (env, env.end_at, 3600)


def test_it_warns_again_before_the_new_end_after_an_extend(env, alice, time_machine, sweep):
    time_machine.move_to(env.end_at - HOUR)
    sweep()
    time_machine.move_to(env.end_at - 50 * MINUTE)
    env_extend(env=env, by=alice, extend_by=HOUR)  # the new end is T0 + 5 h
    sweep()
    assert len(mail.outbox) == 1  # 1 h 50 min left: nothing due for the new end yet

    time_machine.move_to(T0 + 4 * HOUR)  # 1 h before the new end
    sweep()
    sweep()
    assert subjects() == ["TT Portal: Env demo expires in 1 h"] * 2
    time_machine.move_to(T0 + 5 * HOUR - 10 * MINUTE)
    sweep()
    assert subjects()[-1] == "TT Portal: Env demo expires in 10 min"
    assert len(mail.outbox) == 3


def test_it_sends_only_the_nearest_warning_when_several_are_due(env, time_machine, sweep):
    # Say the sweep did not run for hours: at 5 min before the end, "1 h left" would be wrong.
    time_machine.move_to(env.end_at - 5 * MINUTE)
    sweep()
    sweep()
    assert subjects() == ["TT Portal: Env demo expires in 5 min"]
    assert Notification.objects.get().before == 600


def test_it_gives_no_warning_that_falls_before_the_envs_start(alice, make_env, time_machine, sweep):
    env = make_env(alice, lifetime=3600)  # made to live exactly 1 h: no "1 h left" at birth
    sweep()
    assert mail.outbox == []
    time_machine.move_to(env.end_at - 10 * MINUTE)
    sweep()
    assert subjects() == ["TT Portal: Env demo expires in 10 min"]


def test_it_warns_at_the_configured_thresholds(env, settings, time_machine, sweep):
    settings.TT_EXPIRY_WARNINGS = (7200,)
    time_machine.move_to(env.end_at - HOUR)
    sweep()
    assert subjects() == ["TT Portal: Env demo expires in 1 h"]  # late: the 2 h warning, with the truth
    time_machine.move_to(env.end_at - 10 * MINUTE)
    sweep()
    assert len(mail.outbox) == 1
    settings.TT_EXPIRY_WARNINGS = ()
    assert services.warn_expiring_due() == []


def test_the_database_refuses_a_second_notification_of_one_key(env, time_machine):
    time_machine.move_to(env.end_at - HOUR)
    (first,) = services.warn_expiring_due()
    with pytest.raises(IntegrityError), transaction.atomic():
        Notification.objects.create(key=first.key, kind=first.kind, user=first.user)
    # Two workers racing past the "already warned?" check: the one that loses makes nothing.
    again = services._notify(user=env.owner, kind=first.kind, key=first.key, now=first.created_at,
                             payload=lambda n: {})
    assert again is None
    assert Delivery.objects.count() == 1


def test_it_records_a_skipped_email_when_the_user_has_no_address(env, alice, time_machine, sweep):
    alice.email = ""
    alice.save()
    time_machine.move_to(env.end_at - HOUR)
    sweep()
    assert mail.outbox == []
    delivery = Delivery.objects.get()
    assert (delivery.channel, delivery.status, delivery.last_error) == (
        "email", "skipped", "the user has no email address")


def test_it_sends_no_email_when_the_user_turned_it_off(env, alice, time_machine, sweep):
    services.email_set(user=alice, enabled=False)
    assert NotificationSettings.of(alice).email_enabled is False
    time_machine.move_to(env.end_at - HOUR)
    sweep()
    assert mail.outbox == []
    assert Delivery.objects.get().last_error == "email notifications are turned off"


def test_it_does_not_warn_about_destroyed_envs(env, alice, time_machine, sweep, run_tasks):
    from envs.services import env_destroy

    with run_tasks():
        env_destroy(env=env, by=alice)
    time_machine.move_to(env.end_at - HOUR)
    sweep()
    assert mail.outbox == []


# --- destroyed by expiry -----------------------------------------------------------------------


def test_it_tells_the_owner_their_env_was_destroyed_by_expiry(env, time_machine, run_tasks, sweep):
    time_machine.move_to(env.end_at)
    with run_tasks():
        (op,) = env_expire_due()
    op.refresh_from_db()
    assert op.status == "succeeded"
    assert subjects() == ["TT Portal: Env demo was destroyed: its time ran out"]
    assert "was destroyed\nby expiry" in mail.outbox[0].body
    notification = Notification.objects.get(kind="env.expired")
    assert notification.operation == op
    assert notification.payload["env"]["status"] == "destroyed"
    assert notification.payload["reason"] == "expired"
    sweep()
    sweep()
    assert len(mail.outbox) == 1


def test_it_says_nothing_when_the_owner_destroys_their_env(env, alice, run_tasks):
    from envs.services import env_destroy

    with run_tasks():
        env_destroy(env=env, by=alice)
    assert mail.outbox == []
    assert not Notification.objects.exists()


def test_a_schedule_runs_the_sweep_every_minute(migrated_schedules):
    schedule = migrated_schedules["tt: notifications"]
    assert (schedule["func"], schedule["schedule_type"], schedule["minutes"], schedule["repeats"]) == (
        "notifications.tasks.sweep", "I", 1, -1)
