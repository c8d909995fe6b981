"""Operations: failures are recorded with a code, retried tasks do no work twice,
and an idempotency key returns the first operation."""

from __future__ import annotations

import threading
from datetime import timedelta

import libvirt
import pytest

from engines.libvirt.engine import LibvirtEngine
from envs.models import Env
from envs.services import env_create, env_destroy, env_set_deny_outgoing, env_start, env_stop
from nodes.registry import forget_engines
from operations import registry, tasks
from operations.models import Operation
from operations.registry import Step
from operations.runner import execute
from tests.support import T0, domain_state, done, no_guest_agent, refused, tt_volumes
from ttportal.errors import CooldownActive, EngineError, InvalidInput
from vms.kinds import VmKind
from vms.models import PortMapping, Snapshot, Vm
from vms.new_vms import NewVm
from vms.services import (
    snapshot_apply,
    snapshot_create,
    snapshot_destroy,
    vm_destroy,
    vm_set_blacklist,
    vm_set_ports,
    vm_start,
    vm_stop,
)

pytestmark = pytest.mark.usefixtures("frozen_clock")


@pytest.fixture
def env(alice, make_env):
    return make_env(alice, vms=[NewVm(name="web", template="tt/busybox", ports=[80]),
                                NewVm(name="db", template="tt/busybox")])


@pytest.fixture
def vm(env):
    return env.vms.get(name="web")


def counting(monkeypatch, cls, name) -> list:
    """Wrap `cls.name` so the test can count the calls (and still do the work)."""
    original = getattr(cls, name)
    calls = []

    def wrapper(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)
    return calls


def failing(monkeypatch, cls, name, exc: Exception) -> list:
    calls = []

    def boom(self, *args, **kwargs):
        calls.append(args)
        raise exc

    monkeypatch.setattr(cls, name, boom)
    return calls


# --- a task that raises records failed + code + message --------------------------------------


def test_it_records_a_failed_start(alice, vm, run_tasks, monkeypatch):
    with run_tasks():
        vm_stop(vm=vm, by=alice)
    failing(monkeypatch, LibvirtEngine, "start_vm", libvirt.libvirtError("domain refused to boot"))
    with run_tasks():
        op = vm_start(vm=vm, by=alice)
    op = done(op)
    assert (op.status, op.error_code) == ("failed", "start_vm")
    assert "domain refused to boot" in op.error_message
    assert "failed: start_vm" in op.log
    assert op.finished_at == T0
    # The VM says what the engine really has: still stopped, and can be started again.
    vm.refresh_from_db()
    assert vm.status == "stopped" and domain_state(vm) == "stopped"
    monkeypatch.undo()
    with run_tasks():
        op = vm_start(vm=vm, by=alice)
    assert done(op).status == "succeeded"


def failed_stop(vm: Vm, by, run_tasks, code: str) -> Operation:
    """Stop `vm` with a failure injected: the operation ends failed with `code` (and `vm` is re-read)."""
    with run_tasks():
        op = vm_stop(vm=vm, by=by)
    op = done(op)
    assert (op.status, op.error_code) == ("failed", code)
    vm.refresh_from_db()
    return op


def test_it_records_a_failed_stop(alice, vm, run_tasks, monkeypatch):
    failing(monkeypatch, LibvirtEngine, "stop_vm", RuntimeError("guest ignored ACPI"))
    op = failed_stop(vm, alice, run_tasks, "stop_vm")
    assert op.error_message == "RuntimeError: guest ignored ACPI"
    assert vm.status == "running" and domain_state(vm) == "running"


def test_it_records_a_crash_in_a_step_as_internal(alice, vm, run_tasks, monkeypatch):
    def crash(op, progress):
        raise KeyError("vm_ids")

    crashing(monkeypatch, VmKind.VM_STOP, crash)
    op = failed_stop(vm, alice, run_tasks, "internal")
    assert op.error_message == "KeyError: 'vm_ids'"
    # The VM is not left "stopping" for ever: it shows what the engine reports.
    assert vm.status == "running" and domain_state(vm) == "running"


def test_it_records_an_unreachable_engine(alice, vm, run_tasks, monkeypatch):
    # The worker meets the node for the first time and cannot initialise its engine.
    forget_engines()
    failing(monkeypatch, LibvirtEngine, "init", EngineError("qemu:///system: no daemon", code="engine_init"))
    op = failed_stop(vm, alice, run_tasks, "engine_init")
    assert "no daemon" in op.error_message
    # Nobody can tell what the VM is doing: error, from which it may be stopped or started again.
    assert vm.status == "error"
    monkeypatch.undo()
    with run_tasks():
        op = vm_stop(vm=vm, by=alice)
    assert done(op).status == "succeeded"
    vm.refresh_from_db()
    assert vm.status == "stopped"


def _crash(op, progress):
    raise RuntimeError("bug in a step")


def crashing(monkeypatch, kind: str, run) -> None:
    """Replace the step of `kind` by `run`, keeping its settle."""
    monkeypatch.setitem(registry.STEPS, kind, Step(run=run, settle=registry.STEPS[kind].settle))


def worker_died(op: Operation, **fields) -> None:
    """The row as a worker leaves it when it dies: running, its lease run out."""
    Operation.objects.filter(pk=op.pk).update(
        status="running", heartbeat_at=T0 - timedelta(minutes=5), **fields
    )


CRASHING = {
    "vm_stop": lambda vm, snap, by: vm_stop(vm=vm, by=by),
    "vm_destroy": lambda vm, snap, by: vm_destroy(vm=vm, by=by),
    "env_stop": lambda vm, snap, by: env_stop(env=vm.env, by=by),
    "env_destroy": lambda vm, snap, by: env_destroy(env=vm.env, by=by),
    "snapshot_create": lambda vm, snap, by: snapshot_create(vm=vm, by=by, name="s2"),
    "snapshot_apply": lambda vm, snap, by: snapshot_apply(snapshot=snap, by=by),
    "snapshot_destroy": lambda vm, snap, by: snapshot_destroy(snapshot=snap, by=by),
}


@pytest.mark.parametrize("kind", list(CRASHING))
def test_it_leaves_nothing_half_claimed_after_a_crash(alice, vm, run_tasks, monkeypatch, kind):
    call = CRASHING[kind]
    with run_tasks():
        op = snapshot_create(vm=vm, by=alice, name="s1")
    snap = done(op).snapshot
    crashing(monkeypatch, kind, _crash)
    with run_tasks():
        op = call(vm, snap, alice)
    op = done(op)
    assert (op.status, op.error_code) == ("failed", "internal")
    assert op.error_message == "RuntimeError: bug in a step"
    # Every VM, snapshot and the Env are back where an action may start from.
    assert set(vm.env.vms.values_list("status", flat=True)) == {"running"}
    assert list(Snapshot.objects.values_list("name", "status")) == [("s1", "ready")]
    assert Env.objects.get(pk=vm.env_id).status == "active"
    monkeypatch.undo()
    with run_tasks():
        op = call(vm, snap, alice)
    assert done(op).status == "succeeded", op.error_message


def test_it_rolls_back_a_failed_create(alice, node, template, run_tasks, monkeypatch, firewall):
    failing(monkeypatch, LibvirtEngine, "set_net", RuntimeError("nft: table busy"))
    with run_tasks():
        op = env_create(owner=alice, by=alice, name="demo",
                        vms=[NewVm(name="web", template=template, ports=[80])])
    op = done(op)
    assert (op.status, op.error_code) == ("failed", "net_set")
    assert "nft: table busy" in op.error_message
    assert "1 of 1 VMs failed" in op.error_message
    # Nothing is left behind: no domain, no image, no address, no port.
    vm = Vm.objects.get(name="web")
    assert vm.status == "destroyed"
    assert vm.mac is None and vm.ip is None
    assert not PortMapping.objects.exists()
    assert domain_state(vm) == "missing"
    assert tt_volumes() == set()
    assert firewall.port_map == {}


def test_it_records_which_vm_failed_and_carries_on_with_the_others(alice, env, run_tasks, monkeypatch):
    original = LibvirtEngine.stop_vm

    def stop_all_but_db(self, spec, **kwargs):
        if spec.name == env.vms.get(name="db").engine_name:
            raise libvirt.libvirtError("db is stuck")
        return original(self, spec, **kwargs)

    monkeypatch.setattr(LibvirtEngine, "stop_vm", stop_all_but_db)
    with run_tasks():
        op = env_stop(env=env, by=alice)
    op = done(op)
    assert (op.status, op.error_code) == ("failed", "stop_vm")
    assert "1 of 2 VMs failed; db" in op.error_message
    assert dict(env.vms.values_list("name", "status")) == {"web": "stopped", "db": "running"}


def meeting(monkeypatch, cls, name: str, parties: int) -> None:
    """`cls.name` returns only once `parties` calls of it are under way at the same time
    (else it fails after 10 s): what passes only if the VMs' calls run side by side."""
    original, barrier = getattr(cls, name), threading.Barrier(parties, timeout=10)

    def wrapper(self, *args, **kwargs):
        barrier.wait()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)


def three_vms(alice, run_tasks, name: str = "trio") -> Operation:
    with run_tasks():
        op = env_create(owner=alice, by=alice, name=name,
                        vms=[NewVm(name=f"vm{i}", template="tt/busybox", ports=[80]) for i in range(3)])
    return done(op)


@pytest.mark.parametrize("method", ["create_image", "start_vm"])
def test_an_envs_vms_are_created_and_booted_side_by_side(alice, template, run_tasks, monkeypatch, method):
    meeting(monkeypatch, LibvirtEngine, method, 3)
    op = three_vms(alice, run_tasks)
    assert op.status == "succeeded", op.error_message
    assert set(Env.objects.get(pk=op.env_id).vms.values_list("status", flat=True)) == {"running"}
    for i in range(3):  # each VM's own steps are all told, in their order
        steps = [line.split(": ", 1)[1] for line in op.log.splitlines() if f" vm{i}: " in line]
        assert steps == ["creating runtime image", "defining VM", "wiring network", "booting", "VM booted",
                         "cold: booted from the template"]
    assert op.progress == 100


def test_an_envs_vms_are_started_side_by_side(alice, template, run_tasks, monkeypatch):
    env = Env.objects.get(pk=three_vms(alice, run_tasks).env_id)
    with run_tasks():
        stopped = env_stop(env=env, by=alice)
    assert done(stopped).status == "succeeded"
    meeting(monkeypatch, LibvirtEngine, "start_vm", 3)
    with run_tasks():
        op = env_start(env=env, by=alice)
    assert done(op).status == "succeeded", op.error_message
    assert set(env.vms.values_list("status", flat=True)) == {"running"}


def test_a_vm_that_fails_to_boot_among_others_is_left_stopped_and_the_others_run(alice, template, run_tasks,
                                                                                   monkeypatch):
    original, started, barrier = LibvirtEngine.start_vm, [], threading.Barrier(3, timeout=10)

    def vm1_will_not_boot(self, spec):  # in a worker thread: it reads no row
        started.append(spec.id)
        barrier.wait()
        if spec.id == sorted(started)[1]:  # the middle one, vm1
            raise libvirt.libvirtError("vm1 cannot boot")
        return original(self, spec)

    monkeypatch.setattr(LibvirtEngine, "start_vm", vm1_will_not_boot)
    op = three_vms(alice, run_tasks)
    assert (op.status, op.error_code) == ("failed", "start_vm")
    assert "1 of 3 VMs failed; vm1: " in op.error_message and "vm1 cannot boot" in op.error_message
    vms = {vm.name: vm for vm in Vm.objects.filter(env_id=op.env_id)}
    assert {name: vm.status for name, vm in vms.items()} == {"vm0": "running", "vm1": "stopped",
                                                              "vm2": "running"}
    assert domain_state(vms["vm1"]) == "stopped"  # settled as the engine has it: it can be started again
    monkeypatch.undo()
    with run_tasks():
        again = vm_start(vm=vms["vm1"], by=alice)
    assert done(again).status == "succeeded"


@pytest.mark.parametrize("path", ["live", "stopped"])
def test_it_records_a_failed_snapshot_and_removes_it(alice, vm, run_tasks, monkeypatch, path):
    # The test driver "has" a guest agent: a running VM is snapshotted live unless it fails to freeze.
    if path == "stopped":
        no_guest_agent(monkeypatch)
    method = {"live": "storage_snapshot_live", "stopped": "storage_create_snapshot"}[path]
    failing(monkeypatch, LibvirtEngine, method, libvirt.libvirtError("disk full"))
    with run_tasks():
        op = snapshot_create(vm=vm, by=alice, name="s1")
    op = done(op)
    assert (op.status, op.error_code) == ("failed", "snapshot_create")
    assert "disk full" in op.error_message
    assert not Snapshot.objects.exists()
    assert op.target == "demo/web@s1"
    vm.refresh_from_db()
    assert vm.status == "running" and domain_state(vm) == "running"  # never stopped, or restarted


def test_it_records_a_failed_apply_and_keeps_the_snapshot(alice, vm, run_tasks, monkeypatch):
    with run_tasks():
        op = snapshot_create(vm=vm, by=alice, name="s1")
    snap = done(op).snapshot
    failing(monkeypatch, LibvirtEngine, "storage_apply_snapshot", RuntimeError("bad overlay"))
    with run_tasks():
        op = snapshot_apply(snapshot=snap, by=alice)
    op = done(op)
    assert (op.status, op.error_code) == ("failed", "snapshot_apply")
    snap.refresh_from_db()
    assert snap.status == "ready"
    vm.refresh_from_db()
    # The flow stopped it to revert, and starts it again on failure as on success.
    assert vm.status == domain_state(vm) == "running"


def test_it_puts_the_blacklist_back_when_the_node_refuses_it(alice, vm, run_tasks, monkeypatch, firewall):
    with run_tasks():
        vm_set_blacklist(vm=vm, by=alice, addresses=["192.0.2.1"])
    failing(monkeypatch, LibvirtEngine, "set_blacklist", RuntimeError("nft: set full"))
    with run_tasks():
        op = vm_set_blacklist(vm=vm, by=alice, addresses=["192.0.2.9"])
    op = done(op)
    assert (op.status, op.error_code) == ("failed", "net_blacklist")
    vm.refresh_from_db()
    assert vm.net_blacklist == ["192.0.2.1"]
    assert firewall.blacklist == {(vm.ip, "192.0.2.1")}


def test_it_puts_the_port_map_back_when_the_node_refuses_it(alice, vm, run_tasks, monkeypatch, firewall):
    before = list(vm.port_mappings.values_list("protocol", "inner_port", "public_port"))
    fw_before = dict(firewall.port_map)
    original = LibvirtEngine.set_net
    calls = []

    def refuse_once(self, spec):
        calls.append(spec)
        if len(calls) == 1:
            raise RuntimeError("nft: map busy")
        return original(self, spec)

    monkeypatch.setattr(LibvirtEngine, "set_net", refuse_once)
    with run_tasks():
        op = vm_set_ports(vm=vm, by=alice, ports=[22, 443])
    op = done(op)
    assert (op.status, op.error_code) == ("failed", "net_set")
    assert list(vm.port_mappings.values_list("protocol", "inner_port", "public_port")) == before
    assert firewall.port_map == fw_before


def test_it_puts_egress_back_when_the_node_refuses_it(alice, env, run_tasks, monkeypatch, firewall):
    failing(monkeypatch, LibvirtEngine, "deny_outgoing", RuntimeError("nft: no such set"))
    with run_tasks():
        op = env_set_deny_outgoing(env=env, by=alice, deny=True)
    op = done(op)
    assert (op.status, op.error_code) == ("failed", "net_outgoing")
    env.refresh_from_db()
    assert not env.deny_outgoing
    assert firewall.denied == set()


def test_it_reports_a_missing_operation(db):
    assert execute(987654) is None
    assert tasks.run_operation(987654) == "missing"


# --- a retried task does not do the work twice -------------------------------------------------


def test_it_does_not_start_twice_when_the_task_is_retried(alice, vm, run_tasks, monkeypatch):
    with run_tasks():
        vm_stop(vm=vm, by=alice)
    starts = counting(monkeypatch, LibvirtEngine, "start_vm")
    with run_tasks():
        op = vm_start(vm=vm, by=alice)
    op = done(op)
    assert op.status == "succeeded"
    finished = op.finished_at
    assert len(starts) == 1
    # Delivered again after it finished.
    assert execute(op.pk).status == "succeeded"
    assert tasks.run_operation(op.pk) == "succeeded"
    # Delivered again after the worker died between doing the work and recording it.
    worker_died(op, finished_at=None)
    assert execute(op.pk).status == "succeeded"
    assert len(starts) == 1
    op.refresh_from_db()
    assert op.finished_at == finished


def test_it_does_not_create_twice_when_the_task_is_retried(alice, template, run_tasks, monkeypatch):
    creates = counting(monkeypatch, LibvirtEngine, "create_vm")
    starts = counting(monkeypatch, LibvirtEngine, "start_vm")
    with run_tasks():
        op = env_create(owner=alice, by=alice, name="demo",
                        vms=[NewVm(name="a", template=template), NewVm(name="b", template=template)])
    assert done(op).status == "succeeded"
    worker_died(op)
    assert execute(op.pk).status == "succeeded"
    assert (len(creates), len(starts)) == (2, 2)


@pytest.mark.parametrize("path", ["live", "stopped"])
def test_it_does_not_snapshot_twice_when_the_task_is_retried(alice, vm, run_tasks, monkeypatch, path):
    if path == "stopped":
        no_guest_agent(monkeypatch)
    method = {"live": "storage_snapshot_live", "stopped": "storage_create_snapshot"}[path]
    snapshots = counting(monkeypatch, LibvirtEngine, method)
    with run_tasks():
        op = snapshot_create(vm=vm, by=alice, name="s1")
    assert done(op).status == "succeeded"
    worker_died(op)
    assert execute(op.pk).status == "succeeded"
    assert len(snapshots) == 1
    assert Snapshot.objects.get().status == "ready"


def test_it_does_not_destroy_twice_when_the_task_is_retried(alice, vm, run_tasks, monkeypatch):
    destroys = counting(monkeypatch, LibvirtEngine, "destroy_vm")
    with run_tasks():
        op = vm_destroy(vm=vm, by=alice)
    assert done(op).status == "succeeded"
    Operation.objects.filter(pk=op.pk).update(status="queued")
    assert execute(op.pk).status == "succeeded"
    assert len(destroys) == 1


# --- an idempotency key returns the first operation ---------------------------------------------


def test_it_returns_the_first_operation_for_a_repeated_key(alice, vm, run_tasks, monkeypatch):
    stops = counting(monkeypatch, LibvirtEngine, "stop_vm")
    with run_tasks():
        first = vm_stop(vm=vm, by=alice, idempotency_key="stop-web-1")
    count = Operation.objects.count()
    # The VM is stopped now, so acting again would be refused: the key answers first.
    with run_tasks():
        again = vm_stop(vm=vm, by=alice, idempotency_key="stop-web-1")
    assert again.pk == first.pk
    assert Operation.objects.count() == count
    assert len(stops) == 1
    assert done(again).status == "succeeded"


def test_it_creates_one_env_for_a_repeated_key(alice, template, run_tasks):
    request = {"owner": alice, "by": alice, "name": "demo", "idempotency_key": "ci-run-42",
               "vms": [NewVm(name="vm", template=template)]}
    with run_tasks():
        first = env_create(**request)
    with run_tasks():
        again = env_create(**request)
    assert again.pk == first.pk
    assert Env.objects.count() == 1
    assert Vm.objects.count() == 1
    assert Operation.objects.count() == 1


def test_it_strips_the_key(alice, vm):
    first = vm_stop(vm=vm, by=alice, idempotency_key="k1")
    assert first.idempotency_key == "k1"
    assert vm_stop(vm=vm, by=alice, idempotency_key="  k1 ").pk == first.pk


def test_it_answers_a_repeated_key_even_during_the_cooldown(alice, vm, settings):
    first = vm_stop(vm=vm, by=alice, idempotency_key="k1")
    settings.TT_MGMT_COOLDOWN = 60
    assert vm_stop(vm=vm, by=alice, idempotency_key="k1").pk == first.pk
    with pytest.raises(CooldownActive):
        vm_stop(vm=vm, by=alice, idempotency_key="k2")


def test_it_keeps_keys_apart_per_user(alice, olga, env, run_tasks):
    web, db = env.vms.get(name="web"), env.vms.get(name="db")
    with run_tasks():
        mine = vm_stop(vm=web, by=alice, idempotency_key="same-key")
    with run_tasks():
        theirs = vm_stop(vm=db, by=olga, idempotency_key="same-key")
    assert theirs.pk != mine.pk
    assert (mine.requested_by, theirs.requested_by) == (alice, olga)
    assert done(theirs).status == "succeeded"
    assert set(env.vms.values_list("status", flat=True)) == {"stopped"}
    assert Operation.objects.filter(idempotency_key="same-key").count() == 2


def test_it_records_nothing_for_a_refused_request_so_its_key_can_be_retried(
    alice, vm, settings, time_machine
):
    settings.TT_MGMT_COOLDOWN = 60
    with pytest.raises(CooldownActive):
        vm_stop(vm=vm, by=alice, idempotency_key="k1")
    assert not Operation.objects.filter(idempotency_key="k1").exists()
    time_machine.shift(60)
    op = vm_stop(vm=vm, by=alice, idempotency_key="k1")
    assert (op.kind, op.idempotency_key) == ("vm_stop", "k1")


def test_it_refuses_an_overlong_key(alice, vm, db_state):
    with refused(db_state, InvalidInput) as caught:
        vm_stop(vm=vm, by=alice, idempotency_key="k" * 129)
    assert caught.value.field == "Idempotency-Key"
