"""Reconciliation reports and repairs drift between the database and the node, and deletes nothing."""

from __future__ import annotations

import libvirt

from engines.registry import get_engine
from envs.models import Operation
from tests.support import domain
from vms.models import Vm
from vms.reconcile import reconcile_nodes


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
    Vm.objects.filter(pk=vm.pk).update(status="stopping")
    domain(vm).destroy()
    assert reconcile_nodes() == 0
    vm.refresh_from_db()
    assert vm.status == "stopping"
