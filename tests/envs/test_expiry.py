"""Expiry sweeps: Envs past their end and snapshots past their life time, to the second."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engines.libvirt.engine import LibvirtEngine
from envs import tasks
from envs.models import Env
from envs.services import env_expire_due, env_expire_one, env_extend
from operations.models import Operation
from tests.support import T0, domain, held_by_a_live_worker, take_snapshot
from vms import tasks as vm_tasks
from vms.models import PortMapping, Snapshot, Vm
from vms.new_vms import NewVm
from vms.services import snapshot_apply, snapshot_create, snapshot_expire_due, snapshot_expire_one

HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)

pytestmark = pytest.mark.usefixtures("frozen_clock")


def status_of(obj) -> str:
    obj.refresh_from_db()
    return obj.status


@pytest.fixture
def env(alice, make_env):
    """Alice's Env, created at T0 for one hour: its end is T0 + 1 h."""
    env = make_env(alice, lifetime=3600,
                   vms=[NewVm(name="web", template="tt/busybox", ports=[80]),
                        NewVm(name="db", template="tt/busybox")])
    assert env.end_at == T0 + HOUR
    return env


# --- Envs ------------------------------------------------------------------------


def test_it_expires_an_env_at_its_end_and_not_a_second_before(env, time_machine, run_tasks, firewall):
    time_machine.move_to(T0 + HOUR - SECOND)
    with run_tasks():
        assert env_expire_due() == []
    assert status_of(env) == "active"
    assert set(env.vms.values_list("status", flat=True)) == {"running"}

    time_machine.move_to(T0 + HOUR)
    with run_tasks():
        ops = env_expire_due()
    assert len(ops) == 1
    op = ops[0]
    op.refresh_from_db()
    assert (op.kind, op.status, op.env_id) == ("env_expire", "succeeded", env.pk)
    assert op.requested_by is None  # the system did it
    env.refresh_from_db()
    assert env.status == "destroyed"
    assert env.destroyed_at == T0 + HOUR
    assert set(env.vms.values_list("status", flat=True)) == {"destroyed"}
    assert not Vm.objects.filter(env=env, mac__isnull=False).exists()
    assert not PortMapping.objects.exists()
    assert firewall.port_map == {}


def test_it_keeps_an_expired_env_on_record_with_its_operations(alice, env, time_machine, run_tasks):
    with run_tasks():
        snapshot_create(vm=env.vms.get(name="web"), by=alice, name="s1")
    time_machine.move_to(T0 + 2 * HOUR)
    with run_tasks():
        env_expire_due()
    assert Env.objects.filter(pk=env.pk, status="destroyed").exists()
    assert env.vms.count() == 2
    assert list(env.operations.order_by("id").values_list("kind", "status")) == [
        ("env_create", "succeeded"), ("snapshot_create", "succeeded"), ("env_expire", "succeeded"),
    ]
    assert list(Env.objects.visible_to(alice)) == [env]  # still in alice's history
    assert not Snapshot.objects.exists()


def test_it_expires_an_env_once(env, time_machine, run_tasks):
    time_machine.move_to(T0 + HOUR)
    with run_tasks():
        assert len(env_expire_due()) == 1
    time_machine.shift(60)
    with run_tasks():
        assert env_expire_due() == []
    assert env_expire_one(env.pk) is None
    assert env.operations.filter(kind="env_expire").count() == 1


def test_it_does_not_expire_twice_while_the_first_sweep_runs(env, time_machine):
    time_machine.move_to(T0 + HOUR)
    first = env_expire_due()  # enqueued on commit, not run yet: the Env is destroying
    assert status_of(env) == "destroying"
    assert env_expire_due() == []
    assert Operation.objects.filter(kind="env_expire").count() == len(first) == 1


def test_it_moves_the_boundary_when_the_env_is_extended(alice, env, time_machine, run_tasks):
    time_machine.move_to(T0 + timedelta(minutes=10))
    env_extend(env=env, by=alice, end_at=T0 + 3 * HOUR)
    time_machine.move_to(T0 + HOUR)
    with run_tasks():
        assert env_expire_due() == []
    time_machine.move_to(T0 + 3 * HOUR - SECOND)
    with run_tasks():
        assert env_expire_due() == []
    assert status_of(env) == "active"
    time_machine.move_to(T0 + 3 * HOUR)
    with run_tasks():
        assert len(env_expire_due()) == 1
    assert status_of(env) == "destroyed"


def test_it_moves_the_boundary_earlier_when_the_env_is_shortened(alice, env, time_machine, run_tasks):
    env_extend(env=env, by=alice, lifetime=600)
    time_machine.move_to(T0 + timedelta(seconds=599))
    with run_tasks():
        assert env_expire_due() == []
    time_machine.move_to(T0 + timedelta(seconds=600))
    with run_tasks():
        assert len(env_expire_due()) == 1
    assert status_of(env) == "destroyed"


def test_it_takes_the_time_it_is_given(env, run_tasks):
    with run_tasks():
        assert env_expire_due(now=T0 + HOUR - SECOND) == []
        assert env_expire_one(env.pk, now=T0 + HOUR - SECOND) is None
        assert env_expire_one(env.pk, now=T0 + HOUR) is not None
    assert status_of(env) == "destroyed"


def test_it_expires_despite_the_cooldown(env, settings, time_machine, run_tasks):
    settings.TT_MGMT_COOLDOWN = 24 * 3600
    env_extend(env=env, by=env.owner, lifetime=60)
    time_machine.move_to(T0 + timedelta(seconds=60))
    with run_tasks():
        assert len(env_expire_due()) == 1
    assert status_of(env) == "destroyed"


def test_it_expires_the_oldest_first_within_a_limit(alice, bob, make_env, time_machine, run_tasks):
    late = make_env(alice, name="late", lifetime=300)
    early = make_env(bob, name="early", lifetime=120)
    time_machine.move_to(T0 + HOUR)
    with run_tasks():
        ops = env_expire_due(limit=1)
    assert [op.env_id for op in ops] == [early.pk]
    assert status_of(late) == "active"
    with run_tasks():
        assert tasks.expire_envs() == 1
    assert status_of(late) == "destroyed"


def test_it_waits_for_a_busy_env_and_takes_it_on_the_next_sweep(env, time_machine, run_tasks):
    web = env.vms.get(name="web")
    snapshotting = snapshot_create(vm=web, by=env.owner, name="s1")  # its task not run yet
    time_machine.move_to(T0 + HOUR)
    held_by_a_live_worker(snapshotting, T0 + HOUR)  # a worker elsewhere is at it
    with run_tasks():
        assert env_expire_due() == []
    assert status_of(env) == "active"
    assert status_of(web) == "snapshotting"
    Operation.objects.filter(pk=snapshotting.pk).update(status="succeeded")
    Vm.objects.filter(pk=web.pk).update(status="running")
    time_machine.shift(60)
    with run_tasks():
        assert len(env_expire_due()) == 1
    assert status_of(env) == "destroyed"


def test_it_retries_an_expiry_that_failed(env, time_machine, run_tasks, monkeypatch):
    original = LibvirtEngine.undefine_vm
    calls = []

    def flaky(self, vm):
        calls.append(vm.name)
        if len(calls) == 1:
            raise RuntimeError("libvirt went away")
        return original(self, vm)

    monkeypatch.setattr(LibvirtEngine, "undefine_vm", flaky)
    time_machine.move_to(T0 + HOUR)
    with run_tasks():
        (op,) = env_expire_due()
    op.refresh_from_db()
    assert (op.status, op.error_code) == ("failed", "undefine_vm")
    assert "libvirt went away" in op.error_message
    # Back to active so the next sweep tries again; the VM that failed says what its node
    # has: forced off, still defined.
    assert status_of(env) == "active"
    assert sorted(env.vms.values_list("status", flat=True)) == ["destroyed", "stopped"]
    time_machine.shift(60)
    with run_tasks():
        (retry,) = env_expire_due()
    retry.refresh_from_db()
    assert retry.status == "succeeded", retry.error_message
    assert status_of(env) == "destroyed"
    assert set(env.vms.values_list("status", flat=True)) == {"destroyed"}


# --- snapshots -------------------------------------------------------------------------


@pytest.fixture
def vm(env):
    return env.vms.get(name="web")


def test_it_expires_a_snapshot_at_its_life_time_and_not_a_second_before(vm, time_machine, run_tasks):
    snap = take_snapshot(vm, run_tasks, "short", life_time=600)
    kept = take_snapshot(vm, run_tasks, "kept")
    assert snap.expires_at == T0 + timedelta(seconds=600)
    time_machine.move_to(T0 + timedelta(seconds=599))
    with run_tasks():
        assert snapshot_expire_due() == []
    assert Snapshot.objects.filter(pk=snap.pk).exists()
    time_machine.move_to(T0 + timedelta(seconds=600))
    with run_tasks():
        (op,) = snapshot_expire_due()
    op.refresh_from_db()
    assert (op.kind, op.status, op.requested_by) == ("snapshot_expire", "succeeded", None)
    assert op.target == "demo/web@short"
    assert not Snapshot.objects.filter(pk=snap.pk).exists()
    assert domain(vm).snapshotListNames() == ["kept"]
    # A snapshot without a life time is kept however long it waits.
    time_machine.move_to(T0 + 300 * 24 * HOUR)
    with run_tasks():
        assert snapshot_expire_due() == []
    assert Snapshot.objects.filter(pk=kept.pk).exists()


def test_it_waits_for_a_snapshot_in_use(alice, vm, time_machine, run_tasks):
    snap = take_snapshot(vm, run_tasks, "s1", life_time=60)
    snapshot_apply(snapshot=snap, by=alice)  # enqueued, not run: the snapshot is applying
    time_machine.move_to(T0 + HOUR)
    assert snapshot_expire_due() == []
    assert snapshot_expire_one(snap.pk) is None
    Snapshot.objects.filter(pk=snap.pk).update(status="ready")
    with run_tasks():
        assert vm_tasks.expire_snapshots() == 1
    assert not Snapshot.objects.filter(pk=snap.pk).exists()


def test_it_expires_snapshots_one_at_a_time_with_the_time_given(vm, run_tasks):
    first = take_snapshot(vm, run_tasks, "a", life_time=60)
    second = take_snapshot(vm, run_tasks, "b", life_time=120)
    with run_tasks():
        assert snapshot_expire_one(second.pk, now=T0 + timedelta(seconds=119)) is None
        assert [op.snapshot_id for op in snapshot_expire_due(now=T0 + timedelta(seconds=119))] == [first.pk]
        assert snapshot_expire_one(second.pk, now=T0 + timedelta(seconds=120)) is not None
    assert not Snapshot.objects.exists()
