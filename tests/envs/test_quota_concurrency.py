"""Quotas hold against concurrent requests: parallel creates, each in its own thread with its
own database connection, that together exceed a quota. The owner's row is locked before
anything is counted (accounts.quotas.lock), so exactly the allowed number succeed and every
other one is refused with quota_exceeded.

On PostgreSQL that lock is a real row lock (SELECT ... FOR UPDATE); on SQLite every write
transaction starts by taking the database's write lock (transaction_mode IMMEDIATE), which
serialises them as well, so the test runs, and holds, on both.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from envs.models import Env
from envs.services import env_create
from ttportal.errors import QuotaExceeded
from vms.models import Vm
from vms.new_vms import NewVm

pytestmark = pytest.mark.django_db(transaction=True)

PARALLEL = 20


def _create_in_parallel(owner, template, vms_each: int) -> list[str]:
    """PARALLEL env_create calls released at once; what each got ("created", or the quota that
    refused it, or the unexpected exception)."""
    barrier = threading.Barrier(PARALLEL)
    results: list[str] = [""] * PARALLEL

    def create(i: int) -> None:
        try:
            vms = [NewVm(name=f"vm{j}", template=template.name) for j in range(vms_each)]
            barrier.wait(timeout=30)
            env_create(owner=owner, by=owner, name=f"env{i}", vms=vms)
            results[i] = "created"
        except QuotaExceeded as exc:
            results[i] = exc.quota
        except Exception as exc:  # reported, not swallowed: the assertion shows it
            results[i] = repr(exc)
        finally:
            connections.close_all()  # this thread's connection

    threads = [threading.Thread(target=create, args=(i,)) for i in range(PARALLEL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return results


@pytest.fixture
def no_tasks(monkeypatch):
    # The operations' tasks (engine work) are not what is tested here: none is dispatched.
    monkeypatch.setattr("operations.recording.dispatch", lambda op_id: None)


@pytest.mark.usefixtures("no_tasks")
def test_twenty_parallel_creates_get_exactly_the_live_env_quota(alice, template, settings):
    settings.TT_QUOTA_ENVS = 5
    results = _create_in_parallel(alice, template, vms_each=1)
    assert sorted(results) == ["created"] * 5 + ["envs"] * 15, results
    assert Env.objects.filter(owner=alice).count() == 5
    assert Vm.objects.filter(env__owner=alice).count() == 5


@pytest.mark.usefixtures("no_tasks")
def test_twenty_parallel_creates_get_exactly_the_vm_quota(alice, template, settings):
    settings.TT_QUOTA_ENVS, settings.TT_QUOTA_VMS = 100, 8
    results = _create_in_parallel(alice, template, vms_each=2)
    assert sorted(results) == ["created"] * 4 + ["vms"] * 16, results
    assert Vm.objects.filter(env__owner=alice).count() == 8
