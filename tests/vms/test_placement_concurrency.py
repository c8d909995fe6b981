"""Placement under concurrency: 50 creates at once (20 for the disk), on PostgreSQL, never
oversell a node.

Each request runs in its own thread and connection, all released together by a
barrier, every one for a different owner (so the owners' quota locks do not
serialise them: only placement's lock on the node rows can). The two nodes have room
for 20 one-vCPU VMs; exactly 20 Envs must be created, the other 30 refused with
no_capacity, and no node may hold more vCPUs than it offers.

PostgreSQL only: SQLite runs one writing transaction at a time (BEGIN IMMEDIATE), so
there is no race to test there. CI runs this in its PostgreSQL pass.
"""

from __future__ import annotations

from collections import Counter

import pytest
from django.db.models import Sum

from envs.services import env_create
from nodes.models import Node
from tests.conftest import make_user
from tests.support import all_at_once
from ttportal.errors import NoCapacity
from vms.models import Vm
from vms.new_vms import NewVm

pytestmark = pytest.mark.django_db(transaction=True)

CREATES = 50


def test_fifty_parallel_creates_never_oversell_a_node(postgres, node, template, monkeypatch,
                                                       quotas_out_of_the_way):
    node.cpu_capacity = 10
    node.save()
    Node.objects.create(name="b", uri=node.uri, public_host="203.0.113.31", vm_network="10.131.0.0/16",
                        port_min=31000, port_max=31099, cpu_capacity=10)
    owners = [make_user(f"user{i}") for i in range(CREATES)]
    # Only the database is under test: no task is handed to a broker.
    monkeypatch.setattr("operations.recording.dispatch", lambda operation_id: None)

    def create(i: int) -> str:
        try:
            env_create(owner=owners[i], by=owners[i], name="e", vms=[
                NewVm(name="a", template="tt/busybox", cpu_num=1, mem_mb=64)])
        except NoCapacity:
            return "no_capacity"
        return "created"

    outcomes = all_at_once(CREATES, create)
    assert Counter(outcomes) == {"created": 20, "no_capacity": 30}
    used = dict(Vm.objects.live().values_list("node__name").annotate(cpu=Sum("cpu_num")))
    assert used == {"local-test": 10, "b": 10}


def test_twenty_parallel_creates_never_oversell_a_node_s_disk(postgres, node, template, monkeypatch, settings,
                                                              quotas_out_of_the_way):
    settings.TT_NODE_DISK_RESERVE, settings.TT_NODE_DISK_OVERCOMMIT = 100, 1.0
    node.disk_capacity_mb = 100 + 10 * 50  # room for ten disks of 50 MiB
    node.save()
    owners = [make_user(f"user{i}") for i in range(20)]
    monkeypatch.setattr("operations.recording.dispatch", lambda operation_id: None)

    def create(i: int) -> str:
        try:
            env_create(owner=owners[i], by=owners[i], name="e", vms=[
                NewVm(name="a", template="tt/busybox", mem_mb=64, disk_mb=50)])
        except NoCapacity:
            return "no_capacity"
        return "created"

    outcomes = all_at_once(20, create)
    assert Counter(outcomes) == {"created": 10, "no_capacity": 10}
    assert Vm.objects.live().aggregate(disk=Sum("disk_mb"))["disk"] == 500
