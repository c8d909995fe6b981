"""Suspend and resume: a VM's memory saved on its node (libvirt's managed save), and the
next start resumes it; stop stays a shutdown. On libvirt's test driver (the real guest
is tests/integration/test_qemu_node.py's)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from envs.services import env_start, env_stop
from nodes.models import Node
from tests.api_support import client_for
from tests.support import domain, done, refused, take_snapshot
from ttportal.errors import IllegalState, Unsupported
from vms import reconcile
from vms.models import Vm
from vms.new_vms import NewVm
from vms.services import snapshot_apply, vm_destroy, vm_start, vm_stop, vm_suspend

pytestmark = pytest.mark.usefixtures("frozen_clock")


@pytest.fixture
def env(alice, make_env):
    return make_env(alice, vms=[NewVm(name="web", template="tt/busybox", ports=[80])])


@pytest.fixture
def vm(env):
    return env.vms.get(name="web")


def suspended(vm: Vm, run_tasks) -> Vm:
    with run_tasks():
        op = vm_suspend(vm=vm, by=vm.env.owner)
    assert done(op).status == "succeeded", op.error_message
    vm.refresh_from_db()
    return vm


def test_it_saves_the_memory_and_start_resumes_it(alice, vm, run_tasks):
    vm = suspended(vm, run_tasks)
    assert vm.status == Vm.Status.SUSPENDED
    dom = domain(vm)
    assert not dom.isActive() and dom.hasManagedSaveImage(0)
    op = vm.operations.get(kind="vm_suspend")
    assert "memory saved" in op.log
    assert vm_suspend(vm=vm, by=alice) is None  # nothing to do, nothing recorded
    with run_tasks():
        op = vm_start(vm=vm, by=alice)
    assert done(op).status == "succeeded"
    assert "resumed from its saved memory" in op.log
    vm.refresh_from_db()
    assert vm.status == Vm.Status.RUNNING and dom.isActive() and not dom.hasManagedSaveImage(0)


def test_stop_stays_a_shutdown_and_a_suspended_vm_is_not_stopped(alice, vm, run_tasks, db_state):
    with run_tasks():
        op = vm_stop(vm=vm, by=alice)
    done(op)
    assert not domain(vm).hasManagedSaveImage(0)  # a plain stop keeps no memory
    with refused(db_state, IllegalState):
        vm_suspend(vm=vm, by=alice)  # nothing runs: nothing to save
    with run_tasks():
        op = vm_start(vm=vm, by=alice)
    done(op)
    vm = suspended(vm, run_tasks)
    with refused(db_state, IllegalState):
        vm_stop(vm=vm, by=alice)


def test_the_env_starts_its_suspended_vms_and_its_stop_leaves_them_so(alice, env, vm, run_tasks):
    vm = suspended(vm, run_tasks)
    assert env_stop(env=env, by=alice) is None  # nothing runs
    vm.refresh_from_db()
    assert vm.status == Vm.Status.SUSPENDED
    with run_tasks():
        op = env_start(env=env, by=alice)
    done(op)
    vm.refresh_from_db()
    assert vm.status == Vm.Status.RUNNING and not domain(vm).hasManagedSaveImage(0)


def test_a_suspended_vm_s_snapshot_is_of_its_disk_and_it_stays_suspended(alice, vm, run_tasks):
    vm = suspended(vm, run_tasks)
    snapshot = take_snapshot(vm, run_tasks)
    vm.refresh_from_db()
    assert vm.status == Vm.Status.SUSPENDED and domain(vm).hasManagedSaveImage(0)
    # Applying one discards the saved memory (it belongs to the disk being reverted).
    with run_tasks():
        op = snapshot_apply(snapshot=snapshot, by=alice)
    assert done(op).status == "succeeded", op.error_message
    vm.refresh_from_db()
    assert vm.status == Vm.Status.STOPPED and not domain(vm).hasManagedSaveImage(0)


def test_a_suspended_vm_is_destroyed_whole(alice, vm, run_tasks):
    vm = suspended(vm, run_tasks)
    name = vm.engine_name
    with run_tasks():
        op = vm_destroy(vm=vm, by=alice)
    done(op)
    vm.refresh_from_db()
    assert vm.status == Vm.Status.DESTROYED
    from engines.libvirt.connection import get_connection

    assert name not in [d.name() for d in get_connection(vm.node.uri).listAllDomains()]


def test_reconciliation_sees_a_suspended_vm(alice, vm, run_tasks):
    domain(vm).managedSave(0)  # suspended behind our back
    reconcile.reconcile_node(vm.node_id)
    vm.refresh_from_db()
    assert vm.status == Vm.Status.SUSPENDED


def test_the_api_and_the_portal_offer_it(alice, vm, run_tasks, client):
    api = client_for(alice)
    with run_tasks():
        response = api.post(reverse("api:vm-suspend", args=[vm.pk]))
    assert response.status_code == 202, response.content
    assert api.get(reverse("api:vm-detail", args=[vm.pk])).json()["status"] == "suspended"
    client.force_login(alice)
    page = client.get(reverse("vms:detail", args=[vm.pk])).content.decode()
    assert ">Resume<" in page and reverse("vms:suspend", args=[vm.pk]) not in page


def test_an_engine_without_it_refuses(alice, vm, db_state):
    Node.objects.filter(pk=vm.node_id).update(kind="docker")
    vm.refresh_from_db()
    with refused(db_state, Unsupported) as caught:
        vm_suspend(vm=vm, by=alice)
    assert "cannot suspend" in caught.value.message
    response = client_for(alice).post(reverse("api:vm-suspend", args=[vm.pk]))
    assert (response.status_code, response.json()["code"]) == (422, "unsupported_feature")
