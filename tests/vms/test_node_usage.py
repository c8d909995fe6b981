"""Each node's use counters (vms.models.NodeUsage), which placement reads instead of summing
every VM: after every kind of change they equal a count from scratch (vms.node_usage.counted,
the rule placement summed by), and the reconcile pass repairs one that drifted."""

from __future__ import annotations

import logging
import threading

import libvirt
import pytest
from django.db import connection, transaction

from engines.libvirt.engine import LibvirtEngine
from envs.models import Env
from envs.services import env_create, env_destroy
from tests.support import done, take_snapshot
from vms import node_usage, warm
from vms.models import NodeUsage, Vm, WarmPool
from vms.new_vms import NewVm
from vms.reconcile import reconcile_nodes
from vms.services import (
    snapshot_apply,
    snapshot_destroy,
    vm_add,
    vm_destroy,
    vm_set_ports,
    vm_start,
    vm_suspend,
)

pytestmark = pytest.mark.usefixtures("frozen_clock")

ZERO = dict.fromkeys(NodeUsage.COUNTERS, 0)


def ran(run_tasks, service):
    """The operation `service()` records, run to its end."""
    with run_tasks():
        op = service()
    return done(op)


def kept(node) -> dict:
    return node_usage.kept([node.pk])[node.pk]


def in_step(node) -> dict:
    """The node's counters, once checked against a count from scratch of every node."""
    assert node_usage.drift() == {}
    return kept(node)


def test_a_new_node_has_its_counters_at_zero(node):
    assert in_step(node) == ZERO


def test_creates_added_vms_ports_and_destroys_move_the_counters(alice, node, make_env, run_tasks):
    env = make_env(alice, vms=[
        NewVm(name="a", template="tt/busybox", cpu_num=2, mem_mb=128, ports=[22, "53/udp"]),
        NewVm(name="b", template="tt/busybox", ports=[80])])
    assert in_step(node) == {**ZERO, "vms": 2, "cpu": 3, "mem_mb": 384, "disk_mb": 40,
                             "tcp_ports": 2, "udp_ports": 1}
    more = NewVm(name="c", template="tt/busybox", mem_mb=64, disk_mb=100)
    ran(run_tasks, lambda: vm_add(env=env, spec=more, by=alice))
    assert in_step(node)["vms"] == 3 and kept(node)["disk_mb"] == 140
    a = env.vms.get(name="a")
    ran(run_tasks, lambda: vm_set_ports(vm=a, ports=[22, 8080, "161/udp", "162/udp"], by=alice))
    assert (in_step(node)["tcp_ports"], kept(node)["udp_ports"]) == (3, 2)
    ran(run_tasks, lambda: vm_destroy(vm=a, by=alice))
    assert in_step(node) == {**ZERO, "vms": 2, "cpu": 2, "mem_mb": 320, "disk_mb": 120, "tcp_ports": 1}
    ran(run_tasks, lambda: env_destroy(env=env, by=alice))
    assert in_step(node) == ZERO


def test_a_suspended_vm_counts_its_saved_memory_until_it_runs_again(alice, node, make_env, run_tasks):
    vm = make_env(alice, vms=[NewVm(name="a", template="tt/busybox", mem_mb=512)]).vms.get()
    ran(run_tasks, lambda: vm_suspend(vm=vm, by=alice))
    assert in_step(node)["saved_mb"] == 512
    ran(run_tasks, lambda: vm_start(vm=vm, by=alice))
    assert in_step(node)["saved_mb"] == 0


def test_snapshots_count_their_vm_s_disk_and_a_resize_by_apply_moves_every_counter(alice, node, make_env,
                                                                                  run_tasks):
    vm = make_env(alice, vms=[NewVm(name="a", template="tt/busybox", disk_mb=100)]).vms.get()
    first = take_snapshot(vm, run_tasks, "s1")
    take_snapshot(vm, run_tasks, "s2")
    assert in_step(node)["snapshots_mb"] == 200
    # Resized behind the snapshots' back; applying s1 puts its sizes back.
    Vm.objects.filter(pk=vm.pk).update(cpu_num=4, mem_mb=1024, disk_mb=300)
    assert in_step(node) == {**ZERO, "vms": 1, "cpu": 4, "mem_mb": 1024, "disk_mb": 300, "snapshots_mb": 600}
    ran(run_tasks, lambda: snapshot_apply(snapshot=first, by=alice))
    assert in_step(node) == {**ZERO, "vms": 1, "cpu": 1, "mem_mb": 256, "disk_mb": 100, "snapshots_mb": 200}
    ran(run_tasks, lambda: snapshot_destroy(snapshot=first, by=alice))
    assert in_step(node)["snapshots_mb"] == 100
    ran(run_tasks, lambda: vm_destroy(vm=vm, by=alice))  # its last snapshot goes with it
    assert in_step(node) == ZERO


def test_warm_spares_count_as_vms_and_their_saved_memory_by_their_pool_s_keep(alice, node, template, olga,
                                                                                run_tasks):
    with run_tasks():
        pool = warm.pool_save(pool=WarmPool(node=node, template=template, size=2,
                                            vm_sizes=[{"cpu_num": 1, "mem_mb": 128, "disk_mb": 0}]), by=olga)
    assert in_step(node) == {**ZERO, "vms": 2, "cpu": 2, "mem_mb": 256, "disk_mb": 40, "saved_mb": 256}
    # Kept paused (memory held, nothing saved on disk): the spares' saved memory is no more.
    WarmPool.objects.filter(pk=pool.pk).update(keep=WarmPool.Keep.PAUSED)
    assert in_step(node)["saved_mb"] == 0
    WarmPool.objects.filter(pk=pool.pk).update(keep=WarmPool.Keep.SAVED)
    assert in_step(node)["saved_mb"] == 256
    # A create takes a spare (moved into its Env, restored): it runs, its memory is no longer on disk.
    op = ran(run_tasks, lambda: env_create(owner=alice, by=alice, name="e", vms=[
        NewVm(name="a", template="tt/busybox", mem_mb=128, ports=[80])]))
    assert Env.objects.get(pk=op.env_id).vms.get().start_kind == "warm"
    use = in_step(node)
    assert use["vms"] == Vm.objects.live().filter(node=node).count() >= 2
    assert use["tcp_ports"] == 1


def test_a_create_that_fails_is_rolled_back_and_counts_nothing(alice, node, template, run_tasks, monkeypatch):
    def refuse(self, spec):
        raise libvirt.libvirtError("no room for the domain")

    monkeypatch.setattr(LibvirtEngine, "define_vm", refuse)
    op = ran(run_tasks, lambda: env_create(owner=alice, by=alice, name="e", vms=[
        NewVm(name="a", template="tt/busybox", ports=[22])]))
    assert op.status == "failed"
    assert Vm.objects.get(env_id=op.env_id).status == Vm.Status.DESTROYED
    assert in_step(node) == ZERO


def test_rows_deleted_outright_are_taken_off(alice, node, make_env, run_tasks):
    env = make_env(alice, vms=[NewVm(name="a", template="tt/busybox", ports=[22])])
    take_snapshot(env.vms.get(), run_tasks)
    Env.objects.filter(pk=env.pk).delete()  # an operator's delete: VMs, ports, snapshots cascade
    assert in_step(node) == ZERO


def test_the_reconcile_pass_repairs_a_drifted_counter_and_says_so(alice, node, make_env, caplog):
    make_env(alice, vms=[NewVm(name="a", template="tt/busybox", ports=[22])])
    right = kept(node)
    NodeUsage.objects.filter(node=node).update(cpu=999, tcp_ports=0)
    with caplog.at_level(logging.WARNING, logger="vms.node_usage"):
        assert reconcile_nodes() == 1
    assert in_step(node) == right
    assert "node local-test: its use counters had drifted, corrected: cpu 999 -> 1, tcp_ports 0 -> 1" \
        in caplog.text
    # A row lost altogether is made again.
    NodeUsage.objects.filter(node=node).delete()
    assert node_usage.repair() == [
        "node local-test: its use counters had no row, made: vms 0 -> 1, cpu 0 -> 1, mem_mb 0 -> 256, "
        "disk_mb 0 -> 20, tcp_ports 0 -> 1"]
    assert in_step(node) == right
    assert reconcile_nodes() == 0  # nothing more to say


def test_every_trigger_that_keeps_the_counters_is_installed(db):
    """A table rebuilt on SQLite (what Django does to change a column or a constraint there)
    drops its triggers, and renaming it back fails while the others name it: a migration
    that rebuilds vms_vm, vms_portmapping, vms_snapshot, vms_warmpool or engines_node must
    drop the triggers first and make them again after (vms/migrations/0011_node_usage.py:
    drop_triggers, create_triggers). This says when one did not."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgname LIKE %s"
        else:
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE %s"
        cursor.execute(query, ["vms_usage_%"])
        names = {row[0] for row in cursor.fetchall()}
    assert names == {f"vms_usage_{t}" for t in (
        "node_insert", "vm_insert", "vm_update", "vm_delete", "port_insert", "port_update", "port_delete",
        "snapshot_insert", "snapshot_update", "snapshot_delete", "pool_update")}


@pytest.mark.django_db(transaction=True)
def test_a_status_change_that_moves_no_counter_leaves_the_counter_row_free(postgres, alice, node, make_env):
    """On PostgreSQL a running VM stopping, say, does not lock its node's counter row: it
    never waits on a placement's transaction, nor holds one up."""
    vm = make_env(alice, vms=1).vms.get()
    changed, finish = threading.Event(), threading.Event()

    def stop_and_hold() -> None:
        try:
            with transaction.atomic():
                Vm.objects.filter(pk=vm.pk).update(status=Vm.Status.STOPPING)
                changed.set()
                finish.wait(10)
        finally:
            connection.close()

    worker = threading.Thread(target=stop_and_hold)
    worker.start()
    try:
        assert changed.wait(10)
        with transaction.atomic():
            row = NodeUsage.objects.select_for_update(nowait=True).get(node=node)  # raises if locked
        assert row.vms == 1
    finally:
        finish.set()
        worker.join()
