"""tt_prepare_node on libvirt's test driver: the node registered and its engine set up
here; its live VMs rewired by vms (nodes.signals.node_prepared), without nodes
importing vms. Real hosts: tests/integration."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from nodes.models import Node
from nodes.registry import get_engine
from tests.support import TEST_URI


def prepare(*args, **options) -> str:
    out = io.StringIO()
    call_command("tt_prepare_node", *args, stdout=out, **options)
    return out.getvalue()


def test_it_registers_a_node_and_sets_it_up(db):
    said = prepare("fresh", uri=TEST_URI, public_host="198.51.100.7", vm_network="10.150.0.0/16")
    node = Node.objects.get(name="fresh")
    assert (node.kind, node.uri, node.public_host, node.vm_network) == (
        "libvirt", TEST_URI, "198.51.100.7", "10.150.0.0/16")
    assert node.notes == "libvirt test driver: boots nothing; for tests only"
    assert "node fresh: pool, network and firewall ready" in said
    assert "node fresh: 0 VMs rewired" in said


def test_preparing_again_rewires_the_live_vms_into_the_firewall(alice, node, make_env):
    env = make_env(alice, vms=2)
    said = prepare(node.name, uri=TEST_URI, public_host=node.public_host, vm_network=node.vm_network,
                   port_min=node.port_min, port_max=node.port_max)
    assert f"node {node.name}: 2 VMs rewired" in said
    # The command set the engine up again, with a firewall of its own: the VMs are in it.
    firewall = get_engine(Node.objects.get(pk=node.pk)).firewall.state
    assert {key[0] for key in firewall.tables["vm_addrs"]} == set(env.vms.values_list("ip", flat=True))


def test_it_refuses_a_template_the_kind_has_no_build_of(db):
    with pytest.raises(CommandError, match="template 'debian' has no docker build"):
        prepare("d", kind="docker", uri="unix:///nowhere.sock", template=["debian"])
    assert not Node.objects.filter(name="d").exists()
