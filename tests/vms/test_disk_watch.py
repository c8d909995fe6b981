"""The disk watchdog: where the engine cannot limit a VM's writable storage, a VM that
wrote more than its disk is stopped, the operation says why (disk_exceeded) and the owner
is told. The decision with a fake engine's sizes; the stop on libvirt's test driver (the
real container is tests/integration/test_docker_disk.py's)."""

from __future__ import annotations

import pytest
from django.core import mail
from django.utils import timezone

from engines.docker.engine import layer_limit_supported
from engines.specs import MIB
from nodes.models import Node
from operations.models import Operation
from tests.support import domain_state
from vms import disk_watch
from vms.models import Vm
from vms.new_vms import NewVm

pytestmark = pytest.mark.usefixtures("frozen_clock")


class FakeEngine:
    """Reports the writable storage of the node's VMs as told."""

    def __init__(self, sizes: dict[str, int] | None):
        self.sizes = sizes
        self.asked: list[str] = []

    def writable_sizes(self, prefix: str) -> dict[str, int] | None:
        self.asked.append(prefix)
        return self.sizes


@pytest.fixture
def vm(alice, make_env) -> Vm:
    alice.email = "alice@example.com"
    alice.save(update_fields=["email"])
    env = make_env(alice, vms=[NewVm(name="box", template="tt/busybox", disk_mb=30)])
    return env.vms.select_related("node").get()


def sizes_are(monkeypatch, sizes: dict[str, int] | None) -> FakeEngine:
    engine = FakeEngine(sizes)
    monkeypatch.setattr(disk_watch, "get_engine", lambda node: engine)
    return engine


def test_a_vm_is_over_its_disk_from_one_byte_past_it(vm):
    assert disk_watch.over_limit([vm], {vm.engine_name: 30 * MIB}) == []
    assert disk_watch.over_limit([vm], {vm.engine_name: 30 * MIB + 1}) == [(vm, 31)]
    assert disk_watch.over_limit([vm], {}) == []  # not reported: not judged


def test_a_vm_past_its_disk_is_stopped_and_the_operation_and_the_owner_say_why(vm, monkeypatch, run_tasks):
    engine = sizes_are(monkeypatch, {vm.engine_name: 45 * MIB})
    with run_tasks():
        (op,) = disk_watch.watch_node(vm.node_id)
    assert engine.asked == [f"tt-{vm.node.name}-"]
    op.refresh_from_db()
    assert (op.kind, op.status, op.error_code) == ("vm_disk_stop", "failed", "disk_exceeded")
    assert op.requested_by is None and op.params == {"used_mb": 45, "disk_mb": 30}
    assert "its writable storage holds 45 MiB, past its disk of 30 MiB: stopping it" in op.log
    assert op.error_message.startswith("VM box was stopped: it wrote 45 MiB, past its disk of 30 MiB")
    vm.refresh_from_db()
    assert vm.status == Vm.Status.STOPPED and domain_state(vm) == "stopped"
    (message,) = mail.outbox
    assert message.to == ["alice@example.com"]
    assert "disk_exceeded" in message.subject and "past its disk of 30 MiB" in message.body


def test_a_vm_within_its_disk_is_left_running(vm, monkeypatch, run_tasks):
    sizes_are(monkeypatch, {vm.engine_name: 30 * MIB})
    with run_tasks():
        assert disk_watch.watch_node(vm.node_id) == []
    vm.refresh_from_db()
    assert vm.status == Vm.Status.RUNNING and not Operation.objects.filter(kind="vm_disk_stop").exists()


def test_a_vm_that_is_not_running_is_not_stopped_again(vm, monkeypatch, run_tasks):
    Vm.objects.filter(pk=vm.pk).update(status=Vm.Status.STOPPED)
    sizes_are(monkeypatch, {vm.engine_name: 99 * MIB})
    with run_tasks():
        assert disk_watch.watch_node(vm.node_id) == []


def test_a_vm_an_operation_holds_is_left_to_it(vm, monkeypatch):
    stopping = Vm.objects.filter(pk=vm.pk)
    assert disk_watch.vm_stop_for_disk(vm=vm, used_mb=99) is not None  # the first pass claims it
    assert stopping.get().status == Vm.Status.STOPPING
    assert disk_watch.vm_stop_for_disk(vm=vm, used_mb=99) is None  # a second one finds it claimed


def docker_node(name: str, index: int, **fields) -> Node:
    return Node.objects.create(name=name, kind="docker", uri="unix:///nowhere.sock",
                               public_host=f"203.0.113.{40 + index}", vm_network=f"10.{140 + index}.0.0/16",
                               port_min=32000 + 100 * index, port_max=32099 + 100 * index, **fields)


def test_an_engine_that_bounds_its_disks_is_not_watched(node, monkeypatch):
    docker = docker_node("d", 0)
    docker_node("down", 1, down_since=timezone.now())
    docker_node("off", 2, enabled=False)
    assert disk_watch.watched_nodes() == [docker.pk]  # not libvirt's node, nor the down or disabled one


def test_one_node_that_cannot_be_read_does_not_stop_the_watch(node, monkeypatch):
    d1, d2 = docker_node("d1", 0), docker_node("d2", 1)
    read = []

    def watch(node_id):
        if node_id != d2.pk:
            raise ConnectionError("no engine there")
        read.append(node_id)
        return []

    monkeypatch.setattr(disk_watch, "watch_node", watch)
    assert disk_watch.watch_all() == f"node {d1.pk}: unreadable"
    assert read == [d2.pk]


def test_the_watchdog_runs_every_minute(migrated_schedules):
    schedule = migrated_schedules["tt: disk watch"]
    assert (schedule["func"], schedule["schedule_type"], schedule["minutes"]) == (
        "vms.tasks.disk_watch", "I", 1)


@pytest.mark.parametrize(("driver", "backing", "limits"), [
    ("overlay", "extfs", False),  # this host: the watchdog stands in
    ("overlay", "xfs", True),  # with project quotas (a refusal at create turns it off)
    ("overlay2", "xfs", True),
    ("btrfs", "", True),
    ("zfs", "", True),
    ("vfs", "extfs", False),
])
def test_containers_get_a_layer_limit_where_the_storage_driver_can_give_one(driver, backing, limits):
    assert layer_limit_supported(driver, backing) is limits
