"""The node admin as vms extends it (vms/node_admin.py): what the VMs use on each node,
the fields where they live locked while there are any, and reconciling a node."""

from __future__ import annotations

import pytest
from django.urls import reverse

from envs.services import env_destroy
from nodes.models import Node
from tests.admin_support import make_env, make_operator, messages_of
from tests.nodes.test_admin import NODE_FORM, NODES
from vms.models import Vm


@pytest.fixture
def root(client, db):
    return make_operator(client)


def test_it_shows_the_capacity_in_use(client, root, node, alice, bob, template, run_tasks):
    Node.objects.filter(pk=node.pk).update(cpu_capacity=8, mem_capacity_mb=4096)
    make_env(alice, name="a", vms=2, ports=(22, "53/udp"))
    gone = make_env(bob, name="gone", run=run_tasks, ports=(80,))
    with run_tasks():
        env_destroy(env=gone, by=bob)  # destroyed VMs hold nothing
    assert Vm.objects.filter(status=Vm.Status.DESTROYED).count() == 1
    response = client.get(NODES)
    row = response.context["cl"].result_list[0]
    assert (row.live_vms, row.cpu_used, row.mem_used, row.tcp_used, row.udp_used) == (2, 2, 512, 2, 2)
    text = response.content.decode()
    for shown in ("2 / 8", "512 / 4096 MiB", "tcp 2 / 1000, udp 2 / 1000", "20000-20999"):
        assert shown in text, shown


def test_it_shows_unlimited_capacity_and_an_empty_node(client, root, node):
    text = client.get(NODES).content.decode()
    assert "0 / ∞ MiB" in text
    assert "tcp 0 / 1000, udp 0 / 1000" in text


def test_it_locks_where_vms_live_while_the_node_has_any(client, root, node, alice, template):
    make_env(alice)
    form = {**NODE_FORM, "name": "local-test", "vm_network": "10.200.0.0/16", "enabled": ""}
    response = client.post(reverse("admin:nodes_node_change", args=[node.pk]), form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    node.refresh_from_db()
    assert (node.vm_network, node.uri, node.mac_prefix) == ("10.100.0.0/16", "test:///default", "52:54:00")
    assert not node.enabled  # the rest is still configurable


def test_it_reconciles_a_node_from_the_admin(client, alice, node, template, run_tasks):
    from tests.support import domain

    make_operator(client)
    vm = make_env(alice, run=run_tasks).vms.get()
    domain(vm).destroy()
    response = client.post(
        "/admin/nodes/node/", {"action": "reconcile", "_selected_action": [node.pk]}, follow=True
    )
    assert ("warning", f"{node.name}: 1 VMs had drifted (see their operations)") in messages_of(response)
    vm.refresh_from_db()
    assert vm.status == "stopped"


def test_each_node_action_is_one_event_by_its_operator(client, root, node, alice, template, run_tasks,
                                                       monkeypatch):
    from audit.models import AuditEvent
    from engines.errors import EngineError, ErrorCode
    from tests.admin_support import post_action
    from tests.support import domain

    def log():
        return [(e.verb, e.user, e.interface, e.object_type, e.object_id, e.result, e.code, e.detail)
                for e in AuditEvent.objects.filter(verb__startswith="node.").order_by("pk")]

    vm = make_env(alice, run=run_tasks).vms.get()
    post_action(client, NODES, "drain", [node])
    post_action(client, NODES, "undrain", [node])
    domain(vm).destroy()
    post_action(client, NODES, "reconcile", [node])
    assert log() == [("node.drain", root, "admin", "node", str(node.pk), "ok", "", {}),
                     ("node.undrain", root, "admin", "node", str(node.pk), "ok", "", {}),
                     ("node.reconcile", root, "admin", "node", str(node.pk), "ok", "", {"drifted": 1})]
    # What the operator's pass settled is recorded too, on the VM.
    assert AuditEvent.objects.get(verb="vm.reconcile").object_id == str(vm.pk)

    def unreachable(node_id):
        raise EngineError("node unreachable", code=ErrorCode.ENGINE_INIT)

    monkeypatch.setattr("vms.reconcile.reconcile_node", unreachable)
    response = post_action(client, NODES, "reconcile", [node])
    assert any("node unreachable" in text for _, text in messages_of(response))
    assert log()[3:] == [
        ("node.reconcile", root, "admin", "node", str(node.pk), "failed", "engine_init", {})]
