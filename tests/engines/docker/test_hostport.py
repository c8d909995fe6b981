"""Naming a container's bridge port: only a port of the node's bridge is ever renamed."""

from __future__ import annotations

import pytest

from engines.docker import hostport


def test_it_never_renames_an_interface_outside_the_node_bridge(monkeypatch):
    # Were the namespace lookup ever to point at the host's own uplink (it once did,
    # through /sys, which shows the host's interfaces in any namespace), nothing moves.
    renamed = []
    monkeypatch.setattr(hostport, "peer_index", lambda netns, interface="eth0": 1)
    monkeypatch.setattr(hostport, "rename", lambda current, wanted: renamed.append(current))
    with pytest.raises(hostport.HostPortError, match="not a port of bridge ttbr-x"):
        hostport.name_container_port("/run/netns/x", "tabc", "ttbr-x")
    assert renamed == []


def test_it_renames_the_peer_when_it_sits_on_the_bridge(monkeypatch):
    renamed = []
    monkeypatch.setattr(hostport, "peer_index", lambda netns, interface="eth0": 7)
    monkeypatch.setattr(hostport, "name_of_index", lambda index: "veth3")
    monkeypatch.setattr(hostport, "bridge_of", lambda name: "ttbr-x")
    monkeypatch.setattr(hostport, "rename", lambda current, wanted: renamed.append((current, wanted)))
    assert hostport.name_container_port("/run/netns/x", "tabc", "ttbr-x") == "veth3"
    assert renamed == [("veth3", "tabc")]
