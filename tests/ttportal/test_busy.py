"""A busy database is a 503 with Retry-After and the code database_busy, never a 500
(ttportal/busy.py), in the API and on the portal's pages.

The lock is real: another thread, with its own connection, holds a write transaction
that locks the owner's row (on SQLite, BEGIN IMMEDIATE takes the database's write lock;
on PostgreSQL, SELECT ... FOR UPDATE locks the row). The request's own wait is made
short, as an operator would bound it: SQLite's busy timeout, PostgreSQL's lock_timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection, transaction
from django.test import Client
from django.urls import reverse

from envs.models import Env
from tests.api_support import client_for
from ttportal.busy import busy

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_MS = 200


@contextmanager
def row_locked(user) -> Iterator[None]:
    """`user`'s row locked by another connection's open write transaction until the block ends."""
    held, release = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def hold() -> None:
        try:
            with transaction.atomic():
                get_user_model().objects.select_for_update().filter(pk=user.pk).update(last_name="busy")
                held.set()
                release.wait(timeout=60)
        except BaseException as exc:  # shown by the test, not lost in the thread
            failure.append(exc)
            held.set()
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(timeout=30) and not failure, failure
    try:
        yield
    finally:
        release.set()
        holder.join(timeout=30)
    assert not holder.is_alive() and not failure, failure


@contextmanager
def short_lock_wait() -> Iterator[None]:
    """This thread's connection waits WAIT_MS for a lock, then says the database is busy."""
    connection.ensure_connection()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"SET lock_timeout = '{WAIT_MS}ms'")
        else:
            cursor.execute(f"PRAGMA busy_timeout = {WAIT_MS}")
    try:
        yield
    finally:
        connection.close()  # the next connection has the configured waits again


def env_body(template) -> dict:
    return {"name": "e", "vms": [{"name": "a", "template": template.name}]}


def test_the_api_answers_503_with_retry_after_while_a_lock_is_held(alice, template, settings):
    settings.TT_DATABASE_BUSY_RETRY_AFTER = 3
    api = client_for(alice)
    with short_lock_wait(), row_locked(alice):
        response = api.post("/api/envs/", env_body(template), format="json")
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "3"
    assert response.json() == {"code": "database_busy", "retry_after": 3,
                               "message": "the database is busy; nothing was changed, retry in 3 s"}
    assert not Env.objects.exists()
    # Once the lock is gone, the same request goes through.
    assert api.post("/api/envs/", env_body(template), format="json").status_code == 202


def test_a_portal_page_answers_503_with_retry_after_while_a_lock_is_held(alice, template):
    client = Client()
    client.force_login(alice)
    data = {"name": "e", "lifetime_hours": "1", "idempotency_key": "k1", "vms-TOTAL_FORMS": "1",
            "vms-INITIAL_FORMS": "0", "vms-MIN_NUM_FORMS": "1", "vms-MAX_NUM_FORMS": "100",
            "vms-0-name": "a", "vms-0-template": str(template.pk), "vms-0-cpu_num": "1",
            "vms-0-mem_mb": "256", "vms-0-disk_mb": "", "vms-0-ports": "", "vms-0-net_kind": "nat"}
    with short_lock_wait(), row_locked(alice):
        response = client.post(reverse("envs:create"), data)
    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    assert "the database is busy; nothing was changed" in response.content.decode()
    assert not Env.objects.exists()
    assert client.post(reverse("envs:create"), data).status_code == 302


def test_only_a_lock_not_free_in_time_is_busy():
    # Any other database error is a bug, and stays a 500 (logged as one).
    assert busy(OperationalError("no such table: envs_env")) is None
    assert busy(OperationalError("database is locked")).retry_after == 2
