"""The fleet: heartbeats with free capacity, a late node marked down and its queued work
failed as node_down, VMs shown unknown, operations routed to their node's queue."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management.base import CommandError
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import Schedule

from envs.services import env_create, env_stop
from nodes import fleet
from nodes.management.commands import tt_node_worker
from nodes.models import Node, NodeHeartbeat
from operations import lease, runner, worker
from operations.models import Operation
from tests.admin_support import make_operator
from tests.api_support import client_for
from tests.support import T0, domain_state, refused
from ttportal.errors import NoCapacity, NodeDown
from vms import heartbeat
from vms.models import Vm
from vms.new_vms import NewVm
from vms.services import vm_stop

TEST_URI = "test:///default"


def beaten_at(node: Node, when) -> None:
    NodeHeartbeat.objects.update_or_create(node=node, defaults=dict(
        beat_at=when, worker="elsewhere:1", ports_free=1, addresses_free=1, vms_running=0))


@pytest.fixture
def b(node, template, settings):
    """Node b: its own cluster (another host), beating now. The template runs there too."""
    settings.TT_NODE_BEAT, settings.TT_NODE_DOWN_AFTER = 10, 3
    b = Node.objects.create(name="b", uri=TEST_URI, public_host="203.0.113.30", vm_network="10.130.0.0/16",
                            port_min=31000, port_max=31099, own_cluster=True)
    beaten_at(b, timezone.now())
    return b


def env_on(node: Node, owner, name: str, *, run_tasks=None, vms: int = 1):
    """An Env of `vms` VMs placed on `node` (the others drained meanwhile)."""
    others = Node.objects.exclude(pk=node.pk)
    drained = list(others.filter(drained=False).values_list("pk", flat=True))
    others.update(drained=True)
    try:
        specs = [NewVm(name=f"vm{i}", template="tt/busybox") for i in range(vms)]
        if run_tasks is None:
            return env_create(owner=owner, by=owner, name=name, vms=specs)
        with run_tasks():
            return env_create(owner=owner, by=owner, name=name, vms=specs)
    finally:
        Node.objects.filter(pk__in=drained).update(drained=False)


# --- beats --------------------------------------------------------------------------


def test_a_beat_says_what_the_node_has_free(alice, node, template, run_tasks):
    node.cpu_capacity, node.mem_capacity_mb = 8, 4096
    node.save()
    with run_tasks():
        env_create(owner=alice, by=alice, name="e", vms=[
            NewVm(name="a", template="tt/busybox", cpu_num=2, mem_mb=512, ports=[22, 80]),
            NewVm(name="b", template="tt/busybox", mem_mb=256, ports=["53/udp"]),
        ])
    beat = heartbeat.write_heartbeat(node)
    assert (beat.cpu_free, beat.mem_free_mb) == (8 - 3, 4096 - 768)
    assert beat.ports_free == 1000 - 2  # the busier protocol: tcp
    assert beat.addresses_free == (2**16 - 3) - 2
    assert beat.vms_running == 2
    assert beat.host_cpus >= 1 and beat.host_mem_mb > 0 and beat.worker


def test_a_beat_of_an_unlimited_node_says_so(node):
    beat = heartbeat.write_heartbeat(node)
    assert (beat.cpu_free, beat.mem_free_mb) == (None, None)


def test_a_beat_brings_a_down_node_back_up(b):
    Node.objects.filter(pk=b.pk).update(down_since=timezone.now())
    heartbeat.write_heartbeat(b)
    b.refresh_from_db()
    assert b.down_since is None
    assert fleet.state_of(b) == fleet.State.UP


def test_the_site_cluster_beats_for_its_nodes_and_a_node_cluster_for_its_own(node, b, monkeypatch):
    NodeHeartbeat.objects.all().delete()
    monkeypatch.setattr(worker, "cluster_name", lambda: "b")
    worker.beat_this_cluster()
    assert list(NodeHeartbeat.objects.values_list("node__name", flat=True)) == ["b"]
    NodeHeartbeat.objects.all().delete()
    monkeypatch.setattr(worker, "cluster_name", lambda: "ttportal")
    worker.beat_this_cluster()
    assert list(NodeHeartbeat.objects.values_list("node__name", flat=True)) == ["local-test"]


# --- down ---------------------------------------------------------------------------


def test_a_node_that_missed_its_beats_is_down_and_its_queued_work_fails(alice, node, b, settings,
                                                                         time_machine):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}  # queued: b's cluster never takes it
    time_machine.move_to(T0, tick=False)
    beaten_at(b, T0)
    op = env_on(b, alice, "on-b")
    vm = op.env.vms.get()
    assert (op.status, op.node, vm.status) == (Operation.Status.QUEUED, b, Vm.Status.CREATING)

    time_machine.move_to(T0 + timedelta(seconds=30), tick=False)
    assert fleet.mark_late_nodes_down().marked_down == []  # three beats of 10 s: not late yet
    time_machine.move_to(T0 + timedelta(seconds=31), tick=False)
    swept = fleet.mark_late_nodes_down()
    assert swept.marked_down == ["b"] and swept.failed_ops == [op.pk]
    op.refresh_from_db()
    assert (op.status, op.error_code) == (Operation.Status.FAILED, "node_down")
    assert "node b is down" in op.error_message
    vm.refresh_from_db()
    # Settled as any failed creation: nothing was made, nothing is kept.
    assert vm.status == Vm.Status.DESTROYED and domain_state(vm) == "missing"
    assert fleet.state_of(Node.objects.get(pk=b.pk)) == fleet.State.DOWN
    assert fleet.mark_late_nodes_down() == fleet.Swept([], [])  # once


def test_a_down_node_keeps_its_vms_shown_unknown_and_refuses_new_work(alice, node, b, run_tasks, db_state):
    env = env_on(b, alice, "on-b", run_tasks=run_tasks).env
    vm = env.vms.get()
    assert vm.status == Vm.Status.RUNNING
    Node.objects.filter(pk=b.pk).update(down_since=timezone.now())
    with refused(db_state, NodeDown) as caught:
        vm_stop(vm=vm, by=alice)
    assert "node b is down" in caught.value.message
    api = client_for(alice)
    response = api.post(reverse("api:vm-stop", args=[vm.pk]))
    assert (response.status_code, response.json()["code"]) == (409, "node_down")
    assert api.get(reverse("api:vm-detail", args=[vm.pk])).json()["status"] == "unknown"
    assert api.get(reverse("api:env-detail", args=[env.pk])).json()["vms"][0]["status"] == "unknown"
    vm.refresh_from_db()
    assert vm.status == Vm.Status.RUNNING and domain_state(vm) == "running"  # never deleted
    heartbeat.write_heartbeat(b)
    assert api.get(reverse("api:vm-detail", args=[vm.pk])).json()["status"] == "running"


def test_the_portal_shows_the_vms_of_a_down_node_as_unknown(client, alice, node, b, run_tasks):
    env = env_on(b, alice, "on-b", run_tasks=run_tasks).env
    vm = env.vms.get()
    Node.objects.filter(pk=b.pk).update(down_since=timezone.now())
    client.force_login(alice)
    page = client.get(reverse("envs:detail", args=[env.pk])).content.decode()
    assert "status-unknown" in page and "node b" in page
    assert reverse("vms:stop", args=[vm.pk]) not in page  # no action offered on a down node
    page = client.get(reverse("vms:detail", args=[vm.pk])).content.decode()
    assert "status-unknown" in page and "its node b is down since" in page


def test_a_running_operation_a_live_worker_holds_is_left_to_its_lease(alice, node, b, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}
    op = env_on(b, alice, "on-b")
    now = timezone.now()
    Operation.objects.filter(pk=op.pk).update(status="running", attempt=1, worker="elsewhere:1/0.0.0",
                                              heartbeat_at=now)
    Node.objects.filter(pk=b.pk).update(down_since=now)
    assert fleet.mark_late_nodes_down().failed_ops == []
    op.refresh_from_db()
    assert op.status == Operation.Status.RUNNING


def test_a_node_the_site_serves_is_never_marked_down(node, settings, time_machine):
    time_machine.move_to(T0, tick=False)
    beaten_at(node, T0 - timedelta(hours=1))
    assert fleet.mark_late_nodes_down().marked_down == []
    assert fleet.state_of(Node.objects.get(pk=node.pk)) == fleet.State.UP


def test_states(node, b):
    b = Node.objects.select_related("heartbeat").get(pk=b.pk)
    assert fleet.state_of(b) == fleet.State.UP
    fleet.set_drained([b], True)
    b.refresh_from_db()
    assert fleet.state_of(b) == fleet.State.DRAINED
    b.enabled = False
    assert fleet.state_of(b) == fleet.State.DISABLED


# --- routing ------------------------------------------------------------------------


def test_operations_go_to_their_node_s_queue(alice, bob, node, b, settings, monkeypatch):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}
    sent = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **kw: sent.append((a[1], kw["cluster"])))
    on_b = env_on(b, alice, "on-b")
    on_site = env_on(node, bob, "on-site")
    runner.dispatch(on_b.pk)
    runner.dispatch(on_site.pk)
    assert sent == [(on_b.pk, "b"), (on_site.pk, "ttportal")]
    assert (on_b.node, on_site.node) == (b, node)


def test_an_env_operation_goes_to_the_node_of_most_of_its_vms(alice, node, b, run_tasks):
    Node.objects.filter(pk=b.pk).update(own_cluster=False, cpu_capacity=1)  # a second node of this host
    node.cpu_capacity = 2
    node.save()
    with run_tasks():
        op = env_create(owner=alice, by=alice, name="e", vms=[
            NewVm(name=f"vm{i}", template="tt/busybox") for i in range(3)])
    env = op.env
    assert sorted(env.vms.values_list("node__name", flat=True)) == ["b", "local-test", "local-test"]
    with run_tasks():
        stop = env_stop(env=env, by=alice)
    assert stop.node == node


def test_an_env_never_spans_hosts(alice, node, b, db_state):
    Node.objects.filter(pk=b.pk).update(cpu_capacity=1)  # b, first by name, takes vm0
    node.cpu_capacity = 2
    node.save()
    with refused(db_state, NoCapacity) as caught:
        env_create(owner=alice, by=alice, name="e", vms=[
            NewVm(name=f"vm{i}", template="tt/busybox") for i in range(3)])
    assert "no node on the host of this Env's other VMs has room (b: 0 vCPUs free, 1 asked)" in \
        caught.value.message


# --- the broker and joining ---------------------------------------------------------


def test_queue_depths_come_from_the_broker(db):
    queue = f"tt-test-{timezone.now().timestamp():.0f}"
    broker = get_broker(queue)
    try:
        assert fleet.queue_depths([queue]) == {queue: 0}
        broker.enqueue("one")
        broker.enqueue("two")
        assert fleet.queue_depths([queue, "other-queue"]) == {queue: 2, "other-queue": 0}
    finally:
        broker.purge_queue() if hasattr(broker, "purge_queue") else None
        broker.delete_queue()


def test_a_worker_says_which_queue_it_serves(db):
    assert lease.queue_of_worker(lease.identity()) == "ttportal"
    assert lease.describe(lease.identity()).endswith("(queue ttportal)")


def test_joining_routes_the_node_and_schedules_its_beat(b):
    Node.objects.filter(pk=b.pk).update(own_cluster=False)
    tt_node_worker.join(b)
    tt_node_worker.join(b)  # again: nothing doubled
    b.refresh_from_db()
    assert b.own_cluster
    schedule = Schedule.objects.get(name="tt: heartbeat b")
    assert (schedule.func, schedule.cluster, schedule.args) == ("vms.tasks.node_beat", "b", "'b'")


def test_a_node_worker_needs_the_shared_database_and_redis(db, settings):
    settings.Q_CLUSTER = {k: v for k, v in settings.Q_CLUSTER.items() if k != "redis"}
    with pytest.raises(CommandError) as caught:
        tt_node_worker.require_shared_state()
    wanted = "TT_DATABASE_URL" if connection.vendor == "sqlite" else "TT_REDIS_URL"
    assert wanted in str(caught.value)


# --- the admin's fleet view ---------------------------------------------------------


def test_the_admin_lists_the_fleet(client, node, b, settings):
    make_operator(client)
    Node.objects.filter(pk=b.pk).update(down_since=timezone.now())
    NodeHeartbeat.objects.filter(node=b).update(beat_at=timezone.now() - timedelta(seconds=95))
    heartbeat.write_heartbeat(node)
    page = client.get(reverse("admin:nodes_node_changelist")).content.decode()
    assert "down (since" in page and "95 s ago (its own cluster)" in page
    assert "0 s ago (the site&#x27;s cluster)" in page or "0 s ago (the site's cluster)" in page
    assert "(site queue)" in page
    response = client.post(reverse("admin:nodes_node_changelist"),
                           {"action": "drain", "_selected_action": [node.pk]})
    assert response.status_code == 302
    node.refresh_from_db()
    assert node.drained
    page = client.get(reverse("admin:nodes_node_change", args=[b.pk])).content.decode()
    assert "Free, as last beaten" in page and "worker elsewhere:1" in page
