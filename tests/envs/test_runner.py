"""The runner: claims, leases, take-overs, attempts, and resuming from what the engine has.

Time is frozen at T0; a "worker" here is a lease-holder name. The runner is
exercised the way a cluster drives it: `runner.execute(op id)` for a task,
`recovery.recover()` for the pass that dispatches operations again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection

from engines.libvirt.engine import LibvirtEngine
from envs.models import Env
from envs.services import env_create, env_destroy, env_start, env_stop
from operations import lease, recording, recovery, runner
from operations.lease import LeaseLost
from operations.models import Operation
from tests.support import T0, domain, domain_state, done, held_by_a_live_worker, no_guest_agent, tt_volumes
from ttportal.errors import ErrorCode, IllegalState, TTError
from vms.models import Snapshot, Vm
from vms.new_vms import NewVm
from vms.services import snapshot_create, vm_start, vm_stop

pytestmark = pytest.mark.usefixtures("frozen_clock")
SECOND = timedelta(seconds=1)
A = "host-a:101/0000.0.0"
B = "host-b:202/0000.0.0"


@pytest.fixture(autouse=True)
def _lease(settings):
    settings.TT_OPERATION_LEASE = 30
    settings.TT_OPERATION_MAX_ATTEMPTS = 3


@pytest.fixture
def env(alice, make_env):
    return make_env(alice, vms=[NewVm(name="web", template="tt/busybox", ports=[80]),
                                NewVm(name="db", template="tt/busybox")])


@pytest.fixture
def queued_stop(env, alice):
    """A vm_stop recorded and dispatched, not yet run (its task is not executed here)."""
    return vm_stop(vm=env.vms.get(name="web"), by=alice)


class Killed(BaseException):
    """What SIGKILL does to a worker, as far as the database and the engine can tell:
    it stops dead, running no roll-back and recording nothing."""


def dead_worker() -> str:
    """A lease-holder name on this host whose process does not exist."""
    return lease.identity().replace(f":{os.getpid()}/", ":999999999/")


def dispatches(monkeypatch) -> list[int]:
    """Record what would be handed to the broker instead of running it."""
    sent: list[int] = []
    monkeypatch.setattr(runner, "dispatch", lambda op_id: sent.append(op_id))
    monkeypatch.setattr(recovery, "dispatch", lambda op_id: sent.append(op_id))
    return sent


# --- claims ---------------------------------------------------------------------------


def test_it_claims_a_queued_operation_as_attempt_one(queued_stop):
    op = runner.claim(queued_stop.pk, worker=A)
    assert (op.status, op.attempt, op.worker, op.heartbeat_at, op.started_at) == ("running", 1, A, T0, T0)


def test_it_leaves_a_live_lease_alone_and_takes_an_expired_one_over(queued_stop, time_machine):
    runner.claim(queued_stop.pk, worker=A)
    time_machine.move_to(T0 + 29 * SECOND)
    assert runner.claim(queued_stop.pk, worker=B) is None  # A's lease still runs
    time_machine.move_to(T0 + 31 * SECOND)
    op = runner.claim(queued_stop.pk, worker=B)
    assert (op.attempt, op.worker, op.heartbeat_at) == (2, B, T0 + 31 * SECOND)
    assert op.started_at == T0  # when it first ran


def test_a_renewed_lease_is_not_taken_over(queued_stop, time_machine):
    runner.claim(queued_stop.pk, worker=A)
    for seconds in (5, 10, 15, 20, 25, 30, 35, 40):
        time_machine.move_to(T0 + seconds * SECOND)
        Operation.objects.filter(pk=queued_stop.pk).update(heartbeat_at=T0 + seconds * SECOND)
        assert runner.claim(queued_stop.pk, worker=B) is None


def test_the_worker_that_lost_its_lease_changes_nothing(queued_stop, time_machine):
    a = runner.claim(queued_stop.pk, worker=A)
    a_lease = lease.Lease(a)  # A's lease, never renewed: A stalled
    time_machine.move_to(T0 + 31 * SECOND)
    runner.claim(queued_stop.pk, worker=B)
    progress = runner._progress(a, a_lease)
    with pytest.raises(LeaseLost):
        progress(50, "still at it")
    assert not runner.finish(a_lease)
    op = Operation.objects.get(pk=queued_stop.pk)
    assert (op.status, op.attempt, op.worker, op.log) == ("running", 2, B, "")


def test_a_holder_known_dead_on_this_host_is_taken_over_at_once(queued_stop):
    dead = dead_worker()
    assert lease.holder_is_gone(dead)
    Operation.objects.filter(pk=queued_stop.pk).update(
        status="running", attempt=1, worker=dead, heartbeat_at=T0
    )
    op = runner.claim(queued_stop.pk, worker=B)
    assert (op.attempt, op.worker) == (2, B)


def test_a_live_holder_on_this_host_keeps_its_lease(queued_stop):
    assert not lease.holder_is_gone(lease.identity())
    Operation.objects.filter(pk=queued_stop.pk).update(
        status="running", attempt=1, worker=lease.identity(), heartbeat_at=T0
    )
    assert runner.claim(queued_stop.pk, worker=B) is None


def test_a_holder_on_another_host_is_never_presumed_dead():
    assert not lease.holder_is_gone("elsewhere:1/abcd1234.4026531836.100")
    assert not lease.holder_is_gone("nonsense")
    assert lease.describe(A) == "host-a pid 101"


@pytest.mark.django_db(transaction=True)
def test_of_two_workers_racing_for_one_expired_lease_exactly_one_wins(alice, make_env, time_machine):
    env = make_env(alice, vms=1)
    rounds = 10
    for n in range(rounds):
        op = env_stop(env=env, by=alice) if n % 2 == 0 else env_start(env=env, by=alice)
        Operation.objects.filter(pk=op.pk).update(
            status="running", attempt=1, worker=A, heartbeat_at=T0 - 60 * SECOND
        )
        barrier = threading.Barrier(2)
        won: list[str] = []

        def race(name: str, op_id=op.pk, barrier=barrier, won=won) -> None:
            try:
                barrier.wait()
                if runner.claim(op_id, worker=name) is not None:
                    won.append(name)
            finally:
                connection.close()

        threads = [threading.Thread(target=race, args=(name,)) for name in (B, "host-c:303/0000.0.0")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1, won
        op.refresh_from_db()
        assert (op.attempt, op.worker) == (2, won[0])
        Operation.objects.filter(pk=op.pk).update(status="succeeded")
        Vm.objects.filter(env=env).update(status="stopped" if n % 2 == 0 else "running")


# --- attempts and worker_lost ---------------------------------------------------------------


def test_it_fails_as_worker_lost_after_the_last_attempt_and_settles(env, alice, time_machine):
    web = env.vms.get(name="web")
    op = vm_stop(vm=web, by=alice)
    for attempt in (1, 2, 3):
        time_machine.move_to(T0 + attempt * 40 * SECOND)
        assert runner.claim(op.pk, worker=f"dead:{attempt}/0.0.0").attempt == attempt
    # The fourth claim does not run the step: it settles and records the loss.
    time_machine.move_to(T0 + 200 * SECOND)
    runner.execute(op.pk)
    op = done(op)
    assert (op.status, op.error_code, op.attempt) == ("failed", ErrorCode.WORKER_LOST, 4)
    assert "3 attempts" in op.error_message
    web.refresh_from_db()
    assert web.status == domain_state(web) == "running"  # never stopped: settled to what it is


def test_it_resumes_a_create_whose_worker_died_after_the_image(alice, template, monkeypatch, time_machine):
    """The first worker made the images and died; the next attempt defines, wires and boots."""
    original = LibvirtEngine.define_vm
    calls = []

    def die_at_first_define(self, spec):
        calls.append(spec.name)
        if len(calls) == 1:
            raise Killed
        return original(self, spec)

    monkeypatch.setattr(LibvirtEngine, "define_vm", die_at_first_define)
    op = env_create(owner=alice, by=alice, name="demo", vms=[NewVm(name="a", template=template)])
    with pytest.raises(Killed):
        runner.execute(op.pk)
    op.refresh_from_db()
    assert (op.status, op.attempt) == ("running", 1)
    assert len(tt_volumes()) == 1  # the image is there
    time_machine.move_to(T0 + 31 * SECOND)
    runner.execute(op.pk)
    op = done(op)
    assert (op.status, op.attempt) == ("succeeded", 2)
    vm = Vm.objects.get(name="a")
    assert vm.status == domain_state(vm) == "running"
    assert len(tt_volumes()) == 1  # the same image, reused


def test_it_resumes_a_create_whose_worker_died_while_booting(alice, template, monkeypatch, time_machine):
    original = LibvirtEngine.start_vm
    calls = []

    def die_after_boot(self, spec):
        original(self, spec)  # libvirtd boots it; the worker dies before it records that
        calls.append(spec.name)
        if len(calls) == 1:
            raise Killed

    monkeypatch.setattr(LibvirtEngine, "start_vm", die_after_boot)
    op = env_create(owner=alice, by=alice, name="demo", vms=[NewVm(name="a", template=template)])
    with pytest.raises(Killed):
        runner.execute(op.pk)
    vm = Vm.objects.get(name="a")
    assert vm.status == "starting" and domain_state(vm) == "running"
    time_machine.move_to(T0 + 31 * SECOND)
    runner.execute(op.pk)
    assert done(op).status == "succeeded"
    vm.refresh_from_db()
    assert vm.status == "running"  # not left "starting" under a succeeded operation


def test_it_restores_the_power_state_when_a_snapshot_resumes(env, alice, monkeypatch, time_machine):
    web = env.vms.get(name="web")
    original = LibvirtEngine.storage_create_snapshot
    no_guest_agent(monkeypatch)  # the snapshot stops the VM

    def die_after_stopping(self, spec, name):
        raise Killed  # the VM was stopped for the snapshot

    monkeypatch.setattr(LibvirtEngine, "storage_create_snapshot", die_after_stopping)
    op = snapshot_create(vm=web, by=alice, name="s1")
    with pytest.raises(Killed):
        runner.execute(op.pk)
    assert domain_state(web) == "stopped"
    monkeypatch.setattr(LibvirtEngine, "storage_create_snapshot", original)
    time_machine.move_to(T0 + 31 * SECOND)
    runner.execute(op.pk)
    assert done(op).status == "succeeded"
    web.refresh_from_db()
    assert web.status == domain_state(web) == "running"  # as it was before the snapshot
    assert Snapshot.objects.get().status == "ready"


def test_a_snapshot_of_a_vm_without_a_domain_fails_as_snapshot_create(env, alice, run_tasks):
    web = env.vms.get(name="web")
    dom = domain(web)
    dom.destroy()
    dom.undefine()
    with run_tasks():
        op = snapshot_create(vm=web, by=alice, name="s1")
    op = done(op)
    assert (op.status, op.error_code) == ("failed", "snapshot_create")
    assert "not defined" in op.error_message
    web.refresh_from_db()
    assert web.status == "error"  # nothing to run: what the node has
    assert not Snapshot.objects.exists()


# --- the recovery pass -------------------------------------------------------------------------


def test_recovery_dispatches_an_expired_operation_once_per_lease(queued_stop, monkeypatch, time_machine):
    sent = dispatches(monkeypatch)
    runner.claim(queued_stop.pk, worker=A)
    time_machine.move_to(T0 + 20 * SECOND)
    assert recovery.recover() == 0
    time_machine.move_to(T0 + 31 * SECOND)
    assert recovery.recover() == 1
    assert sent == [queued_stop.pk]
    time_machine.move_to(T0 + 45 * SECOND)
    assert recovery.recover() == 0  # its new task may still wait in the broker
    time_machine.move_to(T0 + 62 * SECOND)
    assert recovery.recover() == 1  # that one was lost too


def test_recovery_dispatches_a_dead_holders_operation_at_once(queued_stop, monkeypatch):
    sent = dispatches(monkeypatch)
    dead = dead_worker()
    Operation.objects.filter(pk=queued_stop.pk).update(
        status="running", attempt=1, worker=dead, heartbeat_at=T0, dispatched_at=T0 - 60 * SECOND
    )
    assert recovery.recover() == 1
    assert sent == [queued_stop.pk]


def test_recovery_backs_off_on_a_queued_operation(queued_stop, monkeypatch, time_machine):
    sent = dispatches(monkeypatch)
    Operation.objects.filter(pk=queued_stop.pk).update(dispatched_at=T0)
    dispatched_at = []
    for seconds in range(1, 300):
        time_machine.move_to(T0 + seconds * SECOND)
        if recovery.recover():
            dispatched_at.append(seconds)
    assert dispatched_at == [30, 60, 120, 240]  # a lease, then half its age: a long queue is not flooded
    assert sent == [queued_stop.pk] * 4


def test_recovery_on_a_starting_worker_sends_every_queued_operation_again(queued_stop, monkeypatch,
                                                                        time_machine):
    dispatches(monkeypatch)
    Operation.objects.filter(pk=queued_stop.pk).update(dispatched_at=T0)
    time_machine.move_to(T0 + 3 * SECOND)
    assert recovery.recover() == 0
    started = T0 + 2 * SECOND
    assert recovery.recover(started_at=started) == 1  # its task may have died with the last cluster
    assert recovery.recover(started_at=started) == 0  # a sibling worker's first pass: just sent


def test_recovery_leaves_a_healthy_running_operation_alone(queued_stop, monkeypatch, time_machine):
    sent = dispatches(monkeypatch)
    held_by_a_live_worker(queued_stop, T0 + 100 * SECOND)
    time_machine.move_to(T0 + 110 * SECOND)
    assert recovery.recover(started_at=T0 + 109 * SECOND) == 0
    assert sent == []


def test_a_handed_back_operation_is_claimed_at_once(queued_stop, monkeypatch):
    sent = dispatches(monkeypatch)
    op = runner.claim(queued_stop.pk, worker=A)
    assert runner.hand_back(lease.Lease(op))
    assert sent == [op.pk]
    assert runner.claim(op.pk, worker=B).attempt == 2


# --- the heartbeat ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_lease_is_renewed_while_the_step_runs(alice, make_env, settings, time_machine, monkeypatch):
    time_machine.move_to(T0, tick=True)
    settings.TT_OPERATION_LEASE = 3  # renewed every 0.5 s
    env = make_env(alice, vms=1)
    monkeypatch.setattr(recording, "dispatch", lambda op_id: None)  # a worker takes it below
    op = vm_stop(vm=env.vms.get(), by=alice)
    op = runner.claim(op.pk, worker=A)
    beats = {op.heartbeat_at}
    deadline = time.monotonic() + 10
    with lease.Lease(op) as held:
        while len(beats) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
            beats.add(Operation.objects.get(pk=op.pk).heartbeat_at)
        held.check()  # still ours
    assert len(beats) >= 3  # the claim, then two renewals


@pytest.mark.django_db(transaction=True)
def test_a_handed_back_lease_is_not_renewed(alice, make_env, settings, time_machine, monkeypatch):
    # A stopping worker hands its operation back while the step still runs: a renewal after
    # that would hide the operation from the next claim until the lease ran out.
    time_machine.move_to(T0, tick=True)
    settings.TT_OPERATION_LEASE = 3  # renewed every 0.5 s
    env = make_env(alice, vms=1)
    monkeypatch.setattr(recording, "dispatch", lambda op_id: None)
    sent = dispatches(monkeypatch)
    op = runner.claim(vm_stop(vm=env.vms.get(), by=alice).pk, worker=A)
    with lease.Lease(op) as held:
        assert runner.hand_back(held)
        assert held.lost.wait(10)  # its next renewal found nothing of its own to renew
    op.refresh_from_db()
    assert (op.status, op.worker, op.heartbeat_at) == ("running", "", None)
    assert sent == [op.pk] and runner.claim(op.pk, worker=B).attempt == 2


# --- a destroy is the way out -----------------------------------------------------------------


def test_destroy_takes_over_the_envs_stuck_operations(env, alice, run_tasks, time_machine):
    web = env.vms.get(name="web")
    stuck = snapshot_create(vm=web, by=alice, name="s1")  # its worker dies before it runs
    runner.claim(stuck.pk, worker="dead-host:1/0.0.0")
    time_machine.move_to(T0 + 31 * SECOND)
    with run_tasks():
        op = env_destroy(env=env, by=alice)
    assert done(op).status == "succeeded", op.error_message
    stuck = done(stuck)
    assert (stuck.status, stuck.error_code) == ("failed", ErrorCode.WORKER_LOST)
    assert "alice destroys it" in stuck.error_message
    assert set(env.vms.values_list("status", flat=True)) == {"destroyed"}
    assert Env.objects.get(pk=env.pk).status == "destroyed"
    assert tt_volumes() == set() and not Snapshot.objects.exists()


def test_destroy_still_waits_for_a_healthy_operation(env, alice, time_machine):
    web = env.vms.get(name="web")
    busy = vm_stop(vm=web, by=alice)
    time_machine.move_to(T0 + 31 * SECOND)
    held_by_a_live_worker(busy, T0 + 30 * SECOND)
    with pytest.raises(IllegalState, match="busy: web"):
        env_destroy(env=env, by=alice)
    busy.refresh_from_db()
    assert busy.status == "running"


def test_a_stuck_start_is_ended_by_an_operator(env, alice, olga, run_tasks, time_machine):
    web = env.vms.get(name="web")
    with run_tasks():
        vm_stop(vm=web, by=alice)
    op = vm_start(vm=web, by=alice)  # lost before any worker took it
    time_machine.move_to(T0 + 31 * SECOND)
    assert runner.end_now(op, TTError("ended by olga", code=ErrorCode.CANCELLED))
    op = done(op)
    assert (op.status, op.error_code) == ("failed", "cancelled")
    web.refresh_from_db()
    assert web.status == domain_state(web) == "stopped"  # settled: never started
    assert not runner.end_now(op, TTError("again", code=ErrorCode.CANCELLED))


def test_a_killed_worker_not_yet_reaped_counts_as_gone():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = lease.identity(child.pid)
        assert not lease.holder_is_gone(holder)
        child.kill()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert lease.holder_is_gone(holder)  # a zombie: dead, only not reaped yet
    finally:
        child.kill()
        child.wait()
    assert lease.holder_is_gone(holder)
