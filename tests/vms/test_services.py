"""VM services: every verb, its happy path and its refusals, with time frozen."""

from __future__ import annotations

from datetime import timedelta

import pytest

from envs.services import env_destroy, env_stop
from tests.support import T0, domain, domain_state, done, refused, take_snapshot
from ttportal.errors import CooldownActive, Forbidden, IllegalState, InvalidInput
from vms.models import PortMapping, Snapshot, Vm
from vms.new_vms import NewVm
from vms.services import (
    snapshot_apply,
    snapshot_create,
    snapshot_destroy,
    vm_add,
    vm_destroy,
    vm_set_blacklist,
    vm_set_ports,
    vm_start,
    vm_stop,
)

TEMPLATE = "tt/busybox"
pytestmark = pytest.mark.usefixtures("frozen_clock")


@pytest.fixture
def env(alice, make_env):
    return make_env(alice, vms=[NewVm(name="web", template="tt/busybox", ports=[80, "53/udp"])])


@pytest.fixture
def vm(env):
    return env.vms.get(name="web")


@pytest.fixture
def stopped_vm(vm, alice, run_tasks):
    with run_tasks():
        vm_stop(vm=vm, by=alice)
    vm.refresh_from_db()
    assert vm.status == "stopped"
    return vm


# --- vm_add -------------------------------------------------------------------


def test_it_adds_a_vm_to_a_live_env(alice, env, node, run_tasks, firewall):
    with run_tasks():
        op = vm_add(env=env, by=alice, spec=NewVm(name="db", template="tt/busybox", ports=[5432]))
    op = done(op)
    assert (op.kind, op.status, op.requested_by) == ("vm_add", "succeeded", alice)
    db = env.vms.get(name="db")
    assert op.vm == db
    assert db.status == "running" and domain_state(db) == "running"
    assert db.ip == node.ip_for_mac(db.mac)
    assert db.ip != env.vms.get(name="web").ip
    public = db.port_mappings.get().public_port
    assert firewall.port_map[("tcp", public)] == (db.ip, 5432)


def test_it_adds_a_stopped_vm_to_a_stopped_env(alice, env, run_tasks):
    with run_tasks():
        env_stop(env=env, by=alice)
    with run_tasks():
        op = vm_add(env=env, by=alice, spec=NewVm(name="db", template="tt/busybox"))
    assert done(op).status == "succeeded"
    db = env.vms.get(name="db")
    assert db.status == "stopped" and domain_state(db) == "stopped"


def test_it_lets_staff_add_a_vm(alice, olga, env, run_tasks):
    with run_tasks():
        op = vm_add(env=env, by=olga, spec=NewVm(name="db", template="tt/busybox"))
    assert done(op).requested_by == olga
    assert env.vms.get(name="db").status == "running"


@pytest.mark.parametrize(
    ("field", "spec"),
    [
        ("name", NewVm(name="web", template="tt/busybox")),  # taken in this Env
        ("name", NewVm(name="Web_1", template="tt/busybox")),
        ("template", NewVm(name="db", template="tt/nope")),
        ("disk_mb", NewVm(name="db", template="tt/busybox", disk_mb=10)),
        ("mem_mb", NewVm(name="db", template="tt/busybox", mem_mb=300000)),
        ("cpu_num", NewVm(name="db", template="tt/busybox", cpu_num="many")),
        ("ports[1]", NewVm(name="db", template="tt/busybox", ports=["53/udp", "53/UDP"])),
        ("ports", NewVm(name="db", template="tt/busybox", net_kind="flat", ports=[80])),
    ],
)
def test_it_refuses_bad_input_to_add(alice, env, db_state, field, spec):
    with refused(db_state, InvalidInput) as caught:
        vm_add(env=env, by=alice, spec=spec)
    assert caught.value.field == field


def test_it_refuses_a_disabled_template(alice, env, template, db_state):
    template.enabled = False
    template.save()
    with refused(db_state, InvalidInput) as caught:
        vm_add(env=env, by=alice, spec=NewVm(name="db", template="tt/busybox"))
    assert caught.value.field == "template"


def test_it_refuses_to_add_a_vm_to_a_destroyed_env(alice, env, run_tasks, db_state):
    with run_tasks():
        env_destroy(env=env, by=alice)
    with refused(db_state, IllegalState):
        vm_add(env=env, by=alice, spec=NewVm(name="db", template="tt/busybox"))


# --- vm_start / vm_stop -------------------------------------------------------------


def test_it_stops_and_starts_a_vm(alice, vm, run_tasks, firewall):
    ports_before = dict(firewall.port_map)
    with run_tasks():
        op = vm_stop(vm=vm, by=alice)
    op = done(op)
    assert (op.kind, op.status, op.requested_by, op.vm) == ("vm_stop", "succeeded", alice, vm)
    vm.refresh_from_db()
    assert vm.status == "stopped" and domain_state(vm) == "stopped"
    with run_tasks():
        op = vm_start(vm=vm, by=alice)
    op = done(op)
    assert (op.kind, op.status) == ("vm_start", "succeeded")
    vm.refresh_from_db()
    assert vm.status == "running" and domain_state(vm) == "running"
    # Power changes keep the VM's address and ports.
    assert firewall.port_map == ports_before


def test_it_shows_the_transient_status_until_the_task_runs(alice, vm):
    op = vm_stop(vm=vm, by=alice)  # the task is enqueued on commit, which never comes here
    assert op.status == "queued"
    vm.refresh_from_db()
    assert vm.status == "stopping"


def test_it_lets_staff_stop_a_vm(alice, olga, vm, run_tasks):
    with run_tasks():
        op = vm_stop(vm=vm, by=olga)
    assert done(op).requested_by == olga
    vm.refresh_from_db()
    assert vm.status == "stopped"


def test_it_records_nothing_to_start_a_running_vm(alice, vm, db_state, settings):
    settings.TT_MGMT_COOLDOWN = 60  # nor is a no-op held to the cooldown
    before = db_state()
    assert vm_start(vm=vm, by=alice) is None
    assert vm_start(vm=vm, by=alice, idempotency_key="k") is None
    assert db_state() == before


def test_it_records_nothing_to_stop_a_stopped_vm(alice, stopped_vm, db_state):
    before = db_state()
    assert vm_stop(vm=stopped_vm, by=alice) is None
    assert db_state() == before


def test_it_refuses_to_start_a_vm_busy_with_another_operation(alice, vm, db_state):
    Vm.objects.filter(pk=vm.pk).update(status=Vm.Status.STOPPING)
    with refused(db_state, IllegalState) as caught:
        vm_start(vm=vm, by=alice)
    assert "stopping" in caught.value.message


@pytest.mark.parametrize("busy", ["creating", "starting", "stopping", "snapshotting", "restoring",
                                  "destroying", "destroyed"])
def test_it_refuses_power_changes_while_busy(alice, vm, db_state, busy):
    Vm.objects.filter(pk=vm.pk).update(status=busy)
    before = db_state()
    with pytest.raises(IllegalState):
        vm_start(vm=vm, by=alice)
    with pytest.raises(IllegalState):
        vm_stop(vm=vm, by=alice)
    assert db_state() == before


def test_it_recovers_a_vm_in_error_by_starting_or_stopping_it(alice, vm, run_tasks):
    Vm.objects.filter(pk=vm.pk).update(status="error")
    with run_tasks():
        op = vm_stop(vm=vm, by=alice)
    assert done(op).status == "succeeded"
    vm.refresh_from_db()
    assert vm.status == "stopped"


# --- vm_destroy -----------------------------------------------------------------------


def test_it_destroys_a_vm_and_releases_what_it_held(alice, env, vm, run_tasks, firewall, time_machine):
    with run_tasks():
        vm_add(env=env, by=alice, spec=NewVm(name="db", template="tt/busybox", ports=[5432]))
    with run_tasks():
        snapshot_create(vm=vm, by=alice, name="s1")
    db = env.vms.get(name="db")
    time_machine.shift(10)
    with run_tasks():
        op = vm_destroy(vm=vm, by=alice)
    op = done(op)
    assert (op.kind, op.status, op.requested_by, op.vm_id) == ("vm_destroy", "succeeded", alice, vm.pk)
    vm.refresh_from_db()
    assert vm.status == "destroyed"
    assert vm.destroyed_at == T0 + timedelta(seconds=10)
    assert vm.mac is None and vm.ip is None
    assert not vm.port_mappings.exists()
    assert not Snapshot.objects.filter(vm=vm).exists()
    assert domain_state(vm) == "missing"
    # Only the destroyed VM's rules are gone; the other VM and the Env carry on.
    assert set(firewall.port_map.values()) == {(db.ip, 5432)}
    assert db.status == "running" and domain_state(db) == "running"
    env.refresh_from_db()
    assert env.status == "active"
    assert vm.operations.filter(kind="vm_destroy").exists()


def test_it_refuses_to_destroy_a_destroyed_vm(alice, vm, run_tasks, db_state):
    with run_tasks():
        vm_destroy(vm=vm, by=alice)
    with refused(db_state, IllegalState):
        vm_destroy(vm=vm, by=alice)


def test_it_lets_staff_destroy_a_vm(alice, olga, vm, run_tasks):
    with run_tasks():
        op = vm_destroy(vm=vm, by=olga)
    assert done(op).requested_by == olga
    vm.refresh_from_db()
    assert vm.status == "destroyed"


# --- vm_set_blacklist -----------------------------------------------------------------------


def test_it_sets_and_clears_a_blacklist(alice, vm, run_tasks, firewall):
    ports_before = dict(firewall.port_map)
    with run_tasks():
        op = vm_set_blacklist(vm=vm, by=alice, addresses=["192.0.2.1", " 198.51.100.7", "192.0.2.1"])
    op = done(op)
    assert (op.kind, op.status, op.requested_by) == ("vm_set_blacklist", "succeeded", alice)
    vm.refresh_from_db()
    assert vm.net_blacklist == ["192.0.2.1", "198.51.100.7"]
    assert firewall.blacklist == {(vm.ip, "192.0.2.1"), (vm.ip, "198.51.100.7")}
    assert firewall.port_map == ports_before
    assert vm.status == "running"  # a network change keeps the power state
    with run_tasks():
        op = vm_set_blacklist(vm=vm, by=alice, addresses=[])
    assert done(op).status == "succeeded"
    vm.refresh_from_db()
    assert vm.net_blacklist == []
    assert firewall.blacklist == set()


def test_it_keeps_the_blacklist_across_egress_changes(alice, env, vm, run_tasks, firewall):
    from envs.services import env_set_deny_outgoing

    with run_tasks():
        vm_set_blacklist(vm=vm, by=alice, addresses=["192.0.2.1"])
    for deny in (True, False):
        with run_tasks():
            env_set_deny_outgoing(env=env, by=alice, deny=deny)
    assert firewall.blacklist == {(vm.ip, "192.0.2.1")}
    assert firewall.denied == set()


@pytest.mark.parametrize(
    ("field", "addresses"),
    [
        ("addresses[0]", ["example.com"]),
        ("addresses[1]", ["192.0.2.1", "192.0.2.256"]),
        ("addresses[0]", ["2001:db8::1"]),
        ("addresses[0]", ["10.0.0.0/8"]),
        ("addresses", "192.0.2.1"),
        ("addresses", None),
    ],
)
def test_it_refuses_a_blacklist_that_is_not_addresses(alice, vm, db_state, firewall, field, addresses):
    with refused(db_state, InvalidInput) as caught:
        vm_set_blacklist(vm=vm, by=alice, addresses=addresses)
    assert caught.value.field == field
    assert firewall.blacklist == set()


def test_it_refuses_a_blacklist_on_a_destroyed_vm(alice, vm, run_tasks, db_state):
    with run_tasks():
        vm_destroy(vm=vm, by=alice)
    with refused(db_state, IllegalState):
        vm_set_blacklist(vm=vm, by=alice, addresses=["192.0.2.1"])


# --- vm_set_ports ------------------------------------------------------------------------------


def test_it_sets_ports_keeping_the_public_port_of_kept_ones(alice, vm, run_tasks, firewall):
    public = {(p.protocol, p.inner_port): p.public_port for p in vm.port_mappings.all()}
    with run_tasks():
        op = vm_set_ports(vm=vm, by=alice, ports=[80, "443/tcp"])  # 53/udp goes, 443 comes
    op = done(op)
    assert (op.kind, op.status, op.requested_by) == ("vm_set_ports", "succeeded", alice)
    now = {(p.protocol, p.inner_port): p.public_port for p in vm.port_mappings.all()}
    assert set(now) == {("tcp", 80), ("tcp", 443)}
    assert now[("tcp", 80)] == public[("tcp", 80)]
    assert firewall.port_map == {(proto, pub): (vm.ip, inner) for (proto, inner), pub in now.items()}
    with run_tasks():
        vm_set_ports(vm=vm, by=alice, ports=[])
    assert not vm.port_mappings.exists()
    assert firewall.port_map == {}


@pytest.mark.parametrize(
    ("field", "ports"),
    [
        ("ports[0]", [0]),
        ("ports[0]", [True]),
        ("ports[0]", ["22/TCP"]),
        ("ports[0]", ["022"]),
        ("ports[0]", [[22, "tcp"]]),
        ("ports[0]", [{"inner_port": "22"}]),
        ("ports[0]", [{"inner_port": 22, "extra": 1}]),
        ("ports[0]", ["http"]),
        ("ports[0]", [{"protocol": "icmp", "inner_port": 1}]),
        ("ports", "80"),
    ],
)
def test_it_refuses_bad_ports(alice, vm, db_state, firewall, field, ports):
    fw_before = dict(firewall.port_map)
    with refused(db_state, InvalidInput) as caught:
        vm_set_ports(vm=vm, by=alice, ports=ports)
    assert caught.value.field == field
    assert firewall.port_map == fw_before


def test_it_refuses_ports_on_a_flat_vm(alice, make_env, db_state):
    env = make_env(alice, name="flat", vms=[NewVm(name="f", template="tt/busybox", net_kind="flat")])
    flat = env.vms.get()
    with refused(db_state, InvalidInput) as caught:
        vm_set_ports(vm=flat, by=alice, ports=[22])
    assert caught.value.field == "ports"


def test_it_refuses_ports_on_a_destroyed_vm(alice, vm, run_tasks, db_state):
    with run_tasks():
        vm_destroy(vm=vm, by=alice)
    with refused(db_state, IllegalState):
        vm_set_ports(vm=vm, by=alice, ports=[22])
    assert not PortMapping.objects.exists()


# --- refusals shared by every verb ------------------------------------------------------------


def _verbs():
    """Each verb called on alice's VM (or its snapshot) by `by`."""
    return {
        "vm_add": lambda vm, snap, by: vm_add(env=vm.env, by=by, spec=NewVm(name="db", template=TEMPLATE)),
        "vm_start": lambda vm, snap, by: vm_start(vm=vm, by=by),
        "vm_stop": lambda vm, snap, by: vm_stop(vm=vm, by=by),
        "vm_destroy": lambda vm, snap, by: vm_destroy(vm=vm, by=by),
        "vm_set_blacklist": lambda vm, snap, by: vm_set_blacklist(vm=vm, by=by, addresses=["192.0.2.1"]),
        "vm_set_ports": lambda vm, snap, by: vm_set_ports(vm=vm, by=by, ports=[22]),
        "snapshot_create": lambda vm, snap, by: snapshot_create(vm=vm, by=by, name="s2"),
        "snapshot_apply": lambda vm, snap, by: snapshot_apply(snapshot=snap, by=by),
        "snapshot_destroy": lambda vm, snap, by: snapshot_destroy(snapshot=snap, by=by),
    }


VERBS = _verbs()
LONG_VERBS = ["vm_add", "vm_start", "vm_stop", "vm_destroy", "snapshot_create", "snapshot_apply"]


@pytest.fixture
def with_snapshot(alice, vm, run_tasks):
    snap = take_snapshot(vm, run_tasks, "s1", by=alice)
    vm.refresh_from_db()
    return vm, snap


@pytest.mark.parametrize("verb", list(VERBS))
def test_it_refuses_an_outsider(bob, with_snapshot, db_state, firewall, verb):
    vm, snap = with_snapshot
    if verb == "vm_start":
        Vm.objects.filter(pk=vm.pk).update(status="stopped")
    fw_before = (dict(firewall.port_map), set(firewall.denied), set(firewall.blacklist))
    with refused(db_state, Forbidden):
        VERBS[verb](vm, snap, bob)
    assert (firewall.port_map, firewall.denied, firewall.blacklist) == fw_before


def test_it_refuses_an_inactive_user(alice, with_snapshot, db_state):
    vm, _snap = with_snapshot
    alice.is_active = False
    alice.save()
    with refused(db_state, Forbidden):
        vm_stop(vm=vm, by=alice)


@pytest.mark.parametrize("verb", LONG_VERBS)
def test_it_holds_long_operations_to_the_cooldown(
    alice, with_snapshot, run_tasks, settings, time_machine, db_state, verb
):
    vm, snap = with_snapshot
    if verb == "vm_start":
        with run_tasks():
            vm_stop(vm=vm, by=alice)
        vm.refresh_from_db()
    settings.TT_MGMT_COOLDOWN = 60  # the snapshot (or the stop) was taken just now
    before = db_state()
    with pytest.raises(CooldownActive) as caught:
        VERBS[verb](vm, snap, alice)
    assert caught.value.retry_after == 60
    time_machine.shift(45)
    with pytest.raises(CooldownActive) as caught:
        VERBS[verb](vm, snap, alice)
    assert caught.value.retry_after == 15
    assert db_state() == before
    time_machine.shift(15)
    with run_tasks():
        op = VERBS[verb](vm, snap, alice)
    assert done(op).status == "succeeded", op.error_message
    vm.env.refresh_from_db()
    assert vm.env.last_mgmt_at == T0 + timedelta(seconds=60)


@pytest.mark.parametrize("verb", ["vm_set_blacklist", "vm_set_ports", "snapshot_destroy"])
def test_it_lets_short_operations_through_the_cooldown(alice, with_snapshot, run_tasks, settings, verb):
    vm, snap = with_snapshot
    settings.TT_MGMT_COOLDOWN = 60
    with run_tasks():
        op = VERBS[verb](vm, snap, alice)
    assert done(op).status == "succeeded", op.error_message


@pytest.mark.parametrize("verb", list(VERBS))
def test_it_lets_staff_act_and_records_them(olga, with_snapshot, run_tasks, verb):
    vm, snap = with_snapshot
    if verb == "vm_start":
        Vm.objects.filter(pk=vm.pk).update(status="stopped")
        domain(vm).destroy()
    with run_tasks():
        op = VERBS[verb](vm, snap, olga)
    op = done(op)
    assert op.status == "succeeded", op.error_message
    assert op.requested_by == olga
    assert op.kind == verb


def test_it_refuses_a_second_network_change_while_one_is_applied(alice, make_env):
    env = make_env(alice, vms=1)
    vm = env.vms.get()
    vm_set_ports(vm=vm, ports=[80], by=alice)  # enqueued, not run: still being applied
    with pytest.raises(IllegalState, match="still being applied"):
        vm_set_blacklist(vm=vm, addresses=["192.0.2.1"], by=alice)
    vm.refresh_from_db()
    assert vm.net_blacklist == []
