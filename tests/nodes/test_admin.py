"""The node admin: configuration, fleet state, health, and a loud test-driver warning.
What the VMs use on each node, and reconciling: tests/vms/test_node_admin.py."""

from __future__ import annotations

import pytest
from django.contrib.admin import site as admin_site
from django.urls import reverse

from engines.docker.engine import DockerEngine
from engines.libvirt.engine import LibvirtEngine
from nodes.admin import TEST_DRIVER_WARNING
from nodes.models import Node
from tests.admin_support import count_queries, grant, make_env, make_operator, messages_of, offered_actions
from vms.models import Vm

NODES = reverse("admin:nodes_node_changelist")

NODE_FORM = {
    "name": "kvm-1", "kind": "libvirt", "uri": "qemu+ssh://kvm-1/system", "enabled": "on", "notes": "",
    "public_host": "198.51.100.7", "vm_network": "10.101.0.0/16", "mac_prefix": "52:54:01",
    "network_name": "tt-net", "bridge": "ttbr0", "port_min": "30000", "port_max": "30999",
    "pool_name": "tt-pool",
    "cpu_capacity": "32", "mem_capacity_mb": "65536", "disk_capacity_mb": "0",
}


@pytest.fixture
def root(client, db):
    return make_operator(client)


def test_it_shows_the_node_list_and_page_with_the_test_driver_warning(client, root, node):
    response = client.get(NODES)
    assert response.status_code == 200
    assert TEST_DRIVER_WARNING in response.content.decode()
    assert ("warning", f"local-test: {TEST_DRIVER_WARNING}") in messages_of(response)
    response = client.get(reverse("admin:nodes_node_change", args=[node.pk]))
    assert response.status_code == 200
    assert ("warning", f"local-test: {TEST_DRIVER_WARNING}") in messages_of(response)
    assert client.get(reverse("admin:nodes_node_add")).status_code == 200


def test_it_adds_a_real_node_without_the_warning(client, root):
    response = client.post(reverse("admin:nodes_node_add"), NODE_FORM)
    assert response.status_code == 302, response.context["adminform"].form.errors
    kvm = Node.objects.get(name="kvm-1")
    assert (kvm.port_min, kvm.port_max, kvm.cpu_capacity) == (30000, 30999, 32)
    response = client.get(reverse("admin:nodes_node_change", args=[kvm.pk]))
    assert TEST_DRIVER_WARNING not in response.content.decode()
    assert [level for level, _ in messages_of(response)] == ["success"]  # "was added", no warning


def test_it_refuses_a_bad_port_range(client, root):
    response = client.post(reverse("admin:nodes_node_add"), {**NODE_FORM, "port_min": "31000"})
    assert response.status_code == 200
    assert "port_max" in response.context["adminform"].form.errors
    assert not Node.objects.exists()


def test_it_sends_non_staff_to_the_login_page(client, alice):
    client.force_login(alice)
    response = client.get(NODES)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_it_lists_nodes_in_a_constant_number_of_queries(client, root, node, alice, template):
    make_env(alice, name="first", vms=1, ports=(22, "53/udp"))
    one = count_queries(client, NODES)
    # More VMs, spread over more nodes (placement keeps each Env on one node and spreads
    # Envs over the nodes): a query per node or per VM would show here.
    for name in ("spare-1", "spare-2"):
        Node.objects.create(name=name, uri=f"qemu+ssh://{name}/system", public_host="198.51.100.8")
    for i in range(3):
        make_env(alice, name=f"more-{i}", vms=3, ports=(22, "53/udp"))
    assert Vm.objects.count() == 10
    assert Node.objects.filter(vms__isnull=False).distinct().count() == 3
    assert count_queries(client, NODES) == one


# --- health, and every engine kind's fields ------------------------------------------------


def health_of(response) -> str:
    """The health read-only field of a node's change page, as rendered."""
    for fieldset in response.context["adminform"]:
        for line in fieldset:
            for field in line:
                if field.is_readonly and field.field["name"] == "health":
                    return str(field.contents())
    raise AssertionError("no health field on the page")


@pytest.fixture
def docker_node(db, monkeypatch):
    """A docker node whose socket does not exist; its engine must never be set up by a page view."""
    def no_init(self):
        raise AssertionError("a page view initialised the docker engine")

    monkeypatch.setattr(DockerEngine, "init", no_init)
    return Node.objects.create(name="dock-1", kind="docker", uri="unix:///nonexistent.sock",
                               public_host="203.0.113.20", vm_network="10.101.0.0/16")


def test_it_shows_the_health_of_a_libvirt_test_driver_node(client, root, node):
    response = client.get(reverse("admin:nodes_node_change", args=[node.pk]))
    assert response.status_code == 200
    ok, message = LibvirtEngine(uri=node.uri).health()
    assert ok
    assert health_of(response) == f"✔ {message}"


def test_it_shows_a_docker_node_whose_socket_is_missing_as_unhealthy(client, root, docker_node):
    response = client.get(reverse("admin:nodes_node_change", args=[docker_node.pk]))
    assert response.status_code == 200
    health = health_of(response)
    assert health.startswith("✘ ") and "unix:///nonexistent.sock" in health, health
    assert "Docker" in response.content.decode()  # the kind, as chosen in the form


def test_it_lists_every_kind_with_its_capacity_and_asks_no_engine(client, root, node, docker_node,
                                                                   monkeypatch):
    # The list stays quick whatever the nodes: their engines are asked on each node's own page.
    monkeypatch.setattr("nodes.admin.node_health", lambda node: pytest.fail("the list asked an engine"))
    response = client.get(NODES)
    assert response.status_code == 200
    text = response.content.decode()
    rows = {row.name: row for row in response.context["cl"].result_list}
    assert set(rows) == {"local-test", "dock-1"}
    assert "Docker" in text and "QEMU/KVM (libvirt)" in text
    assert text.count("0 / ∞ MiB") == 2  # capacity, whatever the kind


def test_it_shows_a_health_check_that_raises_as_its_message(client, root, node, monkeypatch):
    def broken(self):
        raise RuntimeError("the driver fell over")

    monkeypatch.setattr(LibvirtEngine, "health", broken)
    response = client.get(reverse("admin:nodes_node_change", args=[node.pk]))
    assert response.status_code == 200
    assert health_of(response) == "✘ RuntimeError: the driver fell over"


def test_it_shows_no_health_on_the_add_page(client, root):
    response = client.get(reverse("admin:nodes_node_add"))
    assert response.status_code == 200
    assert health_of(response) == ""


def test_it_keeps_a_firecracker_nodes_binaries(client, root):
    form = {**NODE_FORM, "name": "fc-1", "kind": "firecracker", "uri": "unix:///run/fc",
            "binary": "/opt/fc/firecracker", "jailer": "/opt/fc/jailer"}
    response = client.post(reverse("admin:nodes_node_add"), form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    fc = Node.objects.get(name="fc-1")
    assert (fc.kind, fc.binary, fc.jailer) == ("firecracker", "/opt/fc/firecracker", "/opt/fc/jailer")
    response = client.get(reverse("admin:nodes_node_change", args=[fc.pk]))
    assert response.status_code == 200
    assert [name for name, _ in response.context["adminform"].fieldsets].count("Firecracker") == 1
    text = response.content.decode()
    assert 'value="/opt/fc/firecracker"' in text and 'value="/opt/fc/jailer"' in text
    assert health_of(response).startswith(("✔ ", "✘ "))


# --- node actions take nodes.change_node --------------------------------------------------------


def test_staff_who_may_only_view_nodes_cannot_drain_or_reconcile_them(client, stan, node):
    grant(stan, "nodes.view_node")
    client.force_login(stan)
    assert client.get(NODES).status_code == 200
    assert offered_actions(client, NODES) == set()
    for action in ("drain", "undrain", "reconcile"):
        response = client.post(NODES, {"action": action, "_selected_action": [node.pk], "index": "0"},
                               follow=True)
        assert response.status_code == 200
        node.refresh_from_db()
        assert not node.drained, action
    # Not through the function the action runs either (the admin's own door aside).
    from django.test import RequestFactory

    from nodes.admin import NodeAdmin

    request = RequestFactory().post(NODES)
    request.user = stan
    request._messages = _Messages()
    NodeAdmin(Node, admin_site).drain(request, Node.objects.filter(pk=node.pk))
    node.refresh_from_db()
    assert not node.drained
    assert any("nodes.change_node" in m for m in request._messages.said)


def test_staff_holding_change_node_drain_and_undrain(client, stan, node):
    grant(stan, "nodes.view_node", "nodes.change_node")
    client.force_login(stan)
    assert offered_actions(client, NODES) == {"drain", "undrain", "reconcile"}
    response = client.post(NODES, {"action": "drain", "_selected_action": [node.pk], "index": "0"},
                           follow=True)
    assert ("success", "1 nodes drained") in messages_of(response)
    node.refresh_from_db()
    assert node.drained


def test_staff_without_permissions_get_403_on_nodes(client, stan, node):
    client.force_login(stan)
    assert client.get(NODES).status_code == 403
    drain = {"action": "drain", "_selected_action": [node.pk], "index": "0"}
    assert client.post(NODES, drain).status_code == 403
    node.refresh_from_db()
    assert not node.drained


class _Messages:
    """Enough of the messages framework for calling an action directly."""

    def __init__(self):
        self.said = []

    def add(self, level, message, extra_tags=""):
        self.said.append(str(message))


def test_the_old_admin_address_of_the_nodes_leads_to_the_new_one(client, node):
    response = client.get(f"/admin/engines/node/{node.pk}/change/?x=1")
    assert response.status_code == 301
    assert response["Location"] == f"/admin/nodes/node/{node.pk}/change/?x=1"
