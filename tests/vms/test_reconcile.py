"""Reconciliation reports and repairs drift between the database and the node, and deletes nothing."""

from __future__ import annotations

from datetime import timedelta

import libvirt
from django.utils import timezone

from envs.models import Env
from nodes.registry import get_engine
from operations.models import Operation
from tests.support import (
    T0,
    domain,
    domain_state,
    held_by_a_live_worker,
    libvirt_snapshots,
    take_snapshot,
    tt_volumes,
)
from vms.models import Snapshot, Vm
from vms.new_vms import NewVm
from vms.reconcile import reconcile_nodes
from vms.services import vm_destroy, vm_stop


def test_it_records_a_vm_stopped_behind_our_back(alice, make_env):
    vm = make_env(alice, vms=1).vms.get()
    domain(vm).destroy()
    assert reconcile_nodes() == 1
    vm.refresh_from_db()
    assert vm.status == "stopped"
    op = Operation.objects.get(kind="vm_reconcile", vm=vm)
    assert (op.status, op.params) == ("succeeded", {"was": "running", "now": "stopped"})


def test_it_marks_a_vanished_vm_as_error_and_keeps_its_row_and_ports(alice, make_env):
    vm = make_env(alice, vms=1, name="gone").vms.get()
    vm.port_mappings.create(node=vm.node, protocol="tcp", inner_port=80, public_port=20080)
    dom = domain(vm)
    dom.destroy()
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    reconcile_nodes()
    vm.refresh_from_db()
    assert vm.status == "error"
    assert vm.port_mappings.count() == 1 and vm.ip
    op = Operation.objects.get(kind="vm_reconcile", vm=vm)
    assert (op.status, op.error_code) == ("failed", "drift")
    assert vm.engine_name in op.error_message


def test_it_reports_nothing_when_all_is_in_step(alice, make_env):
    make_env(alice, vms=2)
    assert reconcile_nodes() == 0
    assert not Operation.objects.filter(kind="vm_reconcile").exists()


def test_it_rewrites_firewall_elements_lost_on_the_node(alice, make_env, node):
    vm = make_env(alice, vms=1).vms.get()
    vm.port_mappings.create(node=node, protocol="tcp", inner_port=22, public_port=20022)
    fw = get_engine(node).firewall
    fw.remove_vm(Vm.objects.get(pk=vm.pk).to_spec())
    assert fw.state.port_map == {}
    reconcile_nodes()
    assert fw.state.port_map == {("tcp", 20022): (vm.ip, 22)}


def test_it_leaves_a_vm_claimed_by_an_operation_alone(alice, make_env):
    vm = make_env(alice, vms=1).vms.get()
    held_by_a_live_worker(vm_stop(vm=vm, by=alice), timezone.now())
    domain(vm).destroy()
    assert reconcile_nodes() == 0
    vm.refresh_from_db()
    assert vm.status == "stopping"


# --- nothing stays transitional -------------------------------------------------------------


def test_it_settles_a_vm_left_starting_with_no_operation(alice, make_env):
    vm = make_env(alice, vms=1).vms.get()
    Vm.objects.filter(pk=vm.pk).update(status="starting")  # its operation ended, the VM did not
    assert reconcile_nodes() == 1
    vm.refresh_from_db()
    assert vm.status == "running"
    op = Operation.objects.get(kind="vm_reconcile", vm=vm)
    assert "left starting with no operation; now running" in op.params["settled"]


def test_it_rolls_back_a_vm_left_creating(alice, make_env, firewall):
    env = make_env(alice, vms=[NewVm(name="web", template="tt/busybox", ports=[80])])
    vm = env.vms.get()
    Vm.objects.filter(pk=vm.pk).update(status="creating")
    reconcile_nodes()
    vm.refresh_from_db()
    assert (vm.status, vm.mac, vm.ip) == ("destroyed", None, None)
    assert domain_state(vm) == "missing" and tt_volumes() == set()
    assert not vm.port_mappings.exists() and firewall.port_map == {}


def test_it_settles_snapshots_and_network_claims_left_behind(alice, make_env, run_tasks, firewall):
    vm = make_env(alice, vms=1).vms.get()
    kept = take_snapshot(vm, run_tasks, "kept")
    half = take_snapshot(vm, run_tasks, "half")
    Snapshot.objects.filter(pk=kept.pk).update(status="applying")
    Snapshot.objects.filter(pk=half.pk).update(status="creating")
    Vm.objects.filter(pk=vm.pk).update(net_busy=True, net_blacklist=["192.0.2.7"])
    reconcile_nodes()
    assert list(Snapshot.objects.values_list("name", "status")) == [("kept", "ready")]
    assert libvirt_snapshots(vm) == {"kept"}
    vm.refresh_from_db()
    assert not vm.net_busy
    assert firewall.blacklist == {(vm.ip, "192.0.2.7")}  # the node made to match the database


def test_it_gives_back_an_env_left_destroying(alice, make_env):
    env = make_env(alice, vms=1)
    Env.objects.filter(pk=env.pk).update(status="destroying")
    reconcile_nodes()
    env.refresh_from_db()
    assert env.status == "active"


# --- DHCP reservations --------------------------------------------------------------------------


def reservations(node) -> dict[str, str]:
    return get_engine(node).inventory("tt-").reservations


def test_it_puts_back_a_lost_reservation_and_removes_a_stray_one(alice, make_env, node):
    vm = make_env(alice, vms=2).vms.get(name="vm0")
    engine = get_engine(node)
    engine.set_reservation(vm.mac, vm.ip, vm.engine_name, present=False)
    engine.set_reservation("52:54:00:aa:bb:cc", "10.100.187.204", "stray", present=True)
    assert reconcile_nodes() == 2
    live = {v.mac: v.ip for v in Vm.objects.live()}
    assert reservations(node) == live
    op = Operation.objects.get(kind="node_drift")
    assert op.env is None and op.target == f"{node.name}: DHCP"
    assert reconcile_nodes() == 0


# --- domains and images no VM owns -----------------------------------------------------------------


def test_it_reports_an_orphan_domain_and_image_then_removes_them_after_the_grace(
    alice, make_env, node, settings, time_machine
):
    settings.TT_DRIFT_GRACE = 600
    time_machine.move_to(T0, tick=False)
    vm = make_env(alice, vms=1).vms.get()
    Vm.objects.filter(pk=vm.pk).update(status="destroyed", mac=None, ip=None)  # the row says gone
    assert reconcile_nodes() == 3  # its domain, its image, and its DHCP reservation (removed at once)
    found = Operation.objects.filter(kind="node_drift", params__action="found").order_by("target")
    assert [op.target for op in found] == [f"{node.name}: domain {vm.engine_name}",
                                           f"{node.name}: image {vm.engine_name}.qcow2"]
    assert {(op.status, op.error_code, op.env_id) for op in found} == {("failed", "drift", vm.env_id)}
    time_machine.move_to(T0 + timedelta(seconds=599))
    assert reconcile_nodes() == 0  # reported once, kept during the grace
    assert domain_state(vm) == "running"
    time_machine.move_to(T0 + timedelta(seconds=600))
    assert reconcile_nodes() == 2
    assert domain_state(vm) == "missing" and tt_volumes() == set()
    assert Operation.objects.filter(kind="node_drift", params__action="removed").count() == 2


def test_it_keeps_the_image_a_destroyed_vm_asked_to_keep(alice, make_env, run_tasks):
    env = make_env(alice, vms=[NewVm(name="web", template="tt/busybox", keep_image=True)])
    vm = env.vms.get()
    with run_tasks():
        vm_destroy(vm=vm, by=alice)
    assert tt_volumes() == {f"{vm.engine_name}.qcow2"}
    assert reconcile_nodes() == 0
    assert not Operation.objects.filter(kind="node_drift").exists()


def test_it_hands_the_engine_the_vms_whose_restore_may_stay_parked(alice, make_env, node, monkeypatch):
    vms = list(make_env(alice, vms=3, name="parked").vms.order_by("name"))
    Vm.objects.filter(pk=vms[0].pk).update(status=Vm.Status.SUSPENDED)
    held_by_a_live_worker(vm_stop(vm=vms[1], by=alice), timezone.now())  # in an operation
    seen = []
    engine = get_engine(node)
    monkeypatch.setattr(type(engine), "tidy_parked",
                        lambda self, prefix, suspended, busy: seen.append((prefix, suspended, busy)) or [])
    reconcile_nodes()
    # vms[2] runs: a parking of it (there is none on the test driver) would be ended.
    assert seen == [(f"tt-{node.name}-", {vms[0].engine_name}, {vms[1].engine_name})]


def test_the_schedule_records_what_it_settled_as_the_system_named_by_it(alice, make_env, migrated_schedules):
    from django_q.tasks import async_task

    from audit.models import AuditEvent

    vm = make_env(alice, vms=1).vms.get()
    domain(vm).destroy()
    name = "tt: reconcile nodes"
    async_task(migrated_schedules[name]["func"], group=name, sync=True)  # as its schedule runs it
    vm.refresh_from_db()
    assert vm.status == "stopped"
    (event,) = AuditEvent.objects.filter(verb="vm.reconcile")
    assert (event.user, event.system, event.interface, event.object_id, event.owner_id, event.result,
            event.detail) == (None, name, "schedule", str(vm.pk), alice.pk, "ok",
                              {"was": "running", "now": "stopped"})
    assert event.actor == f"system: {name}"
