"""Warm spares under concurrency: 20 creates at once, on PostgreSQL, each spare taken by
exactly one of them.

Each request runs in its own thread and connection, released together by a barrier,
every one for a different owner. The pool holds 5 spares: exactly 5 of the 20 VMs
must be those spares (each once), the 15 others cold, and the pool left empty (until
it is refilled, which is not dispatched here). PostgreSQL only, as
test_placement_concurrency.py says why; CI runs it in its PostgreSQL pass.
"""

from __future__ import annotations

from collections import Counter

import pytest

from envs.services import env_create
from tests.conftest import make_user
from tests.support import all_at_once
from vms import warm
from vms.models import Vm, WarmPool
from vms.new_vms import NewVm

pytestmark = pytest.mark.django_db(transaction=True)

CREATES = 20
SPARES = 5


def test_twenty_parallel_creates_take_each_spare_exactly_once(postgres, node, template, olga, monkeypatch,
                                                               quotas_out_of_the_way):
    pool = warm.pool_save(pool=WarmPool(node=node, template=template, size=SPARES,
                                        vm_sizes=[{"cpu_num": 1, "mem_mb": 128, "disk_mb": 0}]), by=olga)
    spares = set(pool.spares.live().filter(status=Vm.Status.SUSPENDED).values_list("pk", flat=True))
    assert len(spares) == SPARES  # made inline (tasks run in-process in tests)
    owners = [make_user(f"user{i}") for i in range(CREATES)]
    # Only the database is under test from here: no task is handed to a broker.
    monkeypatch.setattr("operations.recording.dispatch", lambda operation_id: None)

    def create(i: int) -> str:
        env_create(owner=owners[i], by=owners[i], name="e", vms=[
            NewVm(name="a", template="tt/busybox", cpu_num=1, mem_mb=128)])
        return "created"

    outcomes = all_at_once(CREATES, create)
    assert Counter(outcomes) == {"created": CREATES}
    made = list(Vm.objects.filter(env__owner__in=owners).values_list("pk", "start_kind", "env_id"))
    assert len(made) == CREATES
    taken = [pk for pk, kind, _ in made if kind == Vm.StartKind.WARM]
    assert sorted(taken) == sorted(spares)  # every spare once, no other VM warm
    assert len({env for pk, _, env in made if pk in spares}) == SPARES  # in 5 different Envs
    assert not pool.spares.live().exists()
