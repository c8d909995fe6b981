"""Snapshot services: create (name, optional life time), apply, destroy."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support import T0, domain, done, libvirt_snapshots, refused, take_snapshot
from ttportal.errors import IllegalState, InvalidInput
from vms.models import Snapshot, Vm
from vms.new_vms import NewVm
from vms.services import snapshot_apply, snapshot_create, snapshot_destroy, vm_destroy, vm_stop

pytestmark = pytest.mark.usefixtures("frozen_clock")


@pytest.fixture
def env(alice, make_env):
    return make_env(alice, vms=[NewVm(name="web", template="tt/busybox", ports=[80])])


@pytest.fixture
def vm(env):
    return env.vms.get(name="web")


# --- snapshot_create -------------------------------------------------------------------


def test_it_snapshots_a_running_vm_and_leaves_it_running(alice, vm, run_tasks):
    with run_tasks():
        op = snapshot_create(vm=vm, by=alice, name="before-upgrade")
    op = done(op)
    assert (op.kind, op.status, op.requested_by) == ("snapshot_create", "succeeded", alice)
    assert op.target == "demo/web@before-upgrade"
    snap = op.snapshot
    assert (snap.vm, snap.name, snap.status) == (vm, "before-upgrade", "ready")
    assert snap.created_at == T0
    assert snap.life_time is None and snap.expires_at is None  # kept until removed
    assert snap.path == "before-upgrade"
    # The meta is the VM's config when taken.
    assert (snap.meta["cpu_num"], snap.meta["mem_mb"], snap.meta["ip"]) == (vm.cpu_num, vm.mem_mb, vm.ip)
    vm.refresh_from_db()
    assert vm.status == "running" and domain(vm).isActive()
    assert libvirt_snapshots(vm) == {"before-upgrade"}


def test_it_snapshots_a_stopped_vm_and_leaves_it_stopped(alice, vm, run_tasks):
    with run_tasks():
        vm_stop(vm=vm, by=alice)
    take_snapshot(vm, run_tasks)
    vm.refresh_from_db()
    assert vm.status == "stopped" and not domain(vm).isActive()


def test_it_gives_a_snapshot_a_life_time(alice, vm, run_tasks):
    snap = take_snapshot(vm, run_tasks, life_time=3600)
    assert snap.life_time == 3600
    assert snap.expires_at == T0 + timedelta(hours=1)
    assert take_snapshot(vm, run_tasks, "s2", life_time="120").expires_at == T0 + timedelta(seconds=120)


def test_it_shows_the_snapshot_being_taken(alice, vm):
    op = snapshot_create(vm=vm, by=alice, name="s1")
    vm.refresh_from_db()
    assert vm.status == "snapshotting"
    assert op.snapshot.status == "creating"


def test_it_lets_staff_snapshot_any_vm(alice, olga, vm, run_tasks):
    with run_tasks():
        op = snapshot_create(vm=vm, by=olga, name="s1")
    assert done(op).requested_by == olga


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("name", {"name": "Before Upgrade"}),
        ("name", {"name": ""}),
        ("name", {"name": None}),
        ("name", {"name": "s1"}),  # taken on this VM
        ("life_time", {"life_time": 59}),
        ("life_time", {"life_time": 366 * 24 * 3600}),
        ("life_time", {"life_time": "an hour"}),
        ("life_time", {"life_time": -60}),
        ("life_time", {"life_time": True}),
    ],
)
def test_it_refuses_bad_input_to_snapshot(alice, vm, run_tasks, db_state, field, kwargs):
    take_snapshot(vm, run_tasks, "s1")
    with refused(db_state, InvalidInput) as caught:
        snapshot_create(vm=vm, by=alice, **{"name": "s2", **kwargs})
    assert caught.value.field == field
    assert libvirt_snapshots(vm) == {"s1"}


def test_it_allows_the_same_snapshot_name_on_another_vm(alice, env, vm, run_tasks):
    from vms.services import vm_add

    with run_tasks():
        vm_add(env=env, by=alice, spec=NewVm(name="db", template="tt/busybox"))
    take_snapshot(vm, run_tasks, "s1")
    take_snapshot(env.vms.get(name="db"), run_tasks, "s1")
    assert Snapshot.objects.filter(name="s1").count() == 2


def test_it_refuses_to_snapshot_a_destroyed_vm(alice, env, vm, run_tasks, db_state):
    with run_tasks():
        vm_destroy(vm=vm, by=alice)
    with refused(db_state, IllegalState):
        snapshot_create(vm=vm, by=alice, name="s1")


@pytest.mark.parametrize("busy", ["creating", "starting", "stopping", "snapshotting", "restoring",
                                  "destroying", "error"])
def test_it_refuses_to_snapshot_a_busy_vm(alice, vm, db_state, busy):
    Vm.objects.filter(pk=vm.pk).update(status=busy)
    with refused(db_state, IllegalState):
        snapshot_create(vm=vm, by=alice, name="s1")


# --- snapshot_apply -----------------------------------------------------------------------


def test_it_applies_a_snapshot_restoring_cpu_and_memory(alice, vm, run_tasks):
    snap = take_snapshot(vm, run_tasks)
    assert (vm.cpu_num, vm.mem_mb) == (1, 256)
    # Say the VM was resized since (by an operator, or a future verb).
    Vm.objects.filter(pk=vm.pk).update(cpu_num=4, mem_mb=1024)
    vm.refresh_from_db()
    with run_tasks():
        op = snapshot_apply(snapshot=snap, by=alice)
    op = done(op)
    assert (op.kind, op.status, op.requested_by, op.snapshot) == ("snapshot_apply", "succeeded", alice, snap)
    vm.refresh_from_db()
    assert (vm.cpu_num, vm.mem_mb, vm.disk_mb) == (1, 256, snap.meta["disk_mb"])
    assert vm.latest_meta["cpu_num"] == 1
    # The engine's definition follows, and the VM is running again as it was.
    info = domain(vm).info()
    assert (info[3], info[2]) == (1, 256 * 1024)
    assert vm.status == "running" and domain(vm).isActive()
    snap.refresh_from_db()
    assert snap.status == "ready"  # and can be applied again


def test_it_applies_a_snapshot_to_a_stopped_vm_and_leaves_it_stopped(alice, vm, run_tasks, firewall):
    snap = take_snapshot(vm, run_tasks)
    with run_tasks():
        vm_stop(vm=vm, by=alice)
    ports = dict(firewall.port_map)
    with run_tasks():
        op = snapshot_apply(snapshot=snap, by=alice)
    assert done(op).status == "succeeded", op.error_message
    vm.refresh_from_db()
    assert vm.status == "stopped" and not domain(vm).isActive()
    assert firewall.port_map == ports  # the wiring belongs to the Env as it is now


def test_it_shows_the_snapshot_being_applied(alice, vm, run_tasks):
    snap = take_snapshot(vm, run_tasks)
    snapshot_apply(snapshot=snap, by=alice)
    vm.refresh_from_db()
    snap.refresh_from_db()
    assert (vm.status, snap.status) == ("restoring", "applying")


@pytest.mark.parametrize("snap_status", ["creating", "applying", "destroying"])
def test_it_refuses_to_apply_a_snapshot_that_is_not_ready(alice, vm, run_tasks, db_state, snap_status):
    snap = take_snapshot(vm, run_tasks)
    Snapshot.objects.filter(pk=snap.pk).update(status=snap_status)
    with refused(db_state, IllegalState):
        snapshot_apply(snapshot=snap, by=alice)


@pytest.mark.parametrize("busy", ["starting", "stopping", "snapshotting", "destroying", "error"])
def test_it_refuses_to_apply_to_a_busy_vm(alice, vm, run_tasks, db_state, busy):
    snap = take_snapshot(vm, run_tasks)
    Vm.objects.filter(pk=vm.pk).update(status=busy)
    with refused(db_state, IllegalState):  # the snapshot is ready again, too
        snapshot_apply(snapshot=snap, by=alice)


# --- snapshot_destroy ------------------------------------------------------------------------


def test_it_destroys_a_snapshot_and_keeps_the_record(alice, vm, run_tasks):
    snap = take_snapshot(vm, run_tasks)
    take_snapshot(vm, run_tasks, "s2")
    with run_tasks():
        op = snapshot_destroy(snapshot=snap, by=alice)
    op = done(op)
    assert (op.kind, op.status, op.requested_by) == ("snapshot_destroy", "succeeded", alice)
    assert not Snapshot.objects.filter(pk=snap.pk).exists()
    assert op.snapshot is None  # the row is gone; what it acted on stays readable
    assert op.target == "demo/web@s1"
    assert op.vm == vm
    assert libvirt_snapshots(vm) == {"s2"}
    vm.refresh_from_db()
    assert vm.status == "running"
    # The name is free again.
    take_snapshot(vm, run_tasks, "s1")


@pytest.mark.parametrize("snap_status", ["creating", "applying", "destroying"])
def test_it_refuses_to_destroy_a_snapshot_that_is_not_ready(alice, vm, run_tasks, db_state, snap_status):
    snap = take_snapshot(vm, run_tasks)
    Snapshot.objects.filter(pk=snap.pk).update(status=snap_status)
    with refused(db_state, IllegalState) as caught:
        snapshot_destroy(snapshot=snap, by=alice)
    assert snap_status in caught.value.message


def test_it_destroys_snapshots_with_their_vm(alice, vm, run_tasks):
    take_snapshot(vm, run_tasks, "s1")
    take_snapshot(vm, run_tasks, "s2", life_time=600)
    with run_tasks():
        vm_destroy(vm=vm, by=alice)
    assert not Snapshot.objects.exists()
    assert [op.kind for op in vm.operations.order_by("id")] == [
        "snapshot_create", "snapshot_create", "vm_destroy",
    ]
