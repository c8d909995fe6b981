"""What a VM's node refused it, on its page (vms/blocked.py, from the node's
Firewall.drops_per_vm): counts, or "unknown" when the node cannot be asked."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from engines.network.firewall import MemoryFirewall
from envs.models import Env
from vms import blocked
from vms.models import Vm


@pytest.fixture
def vm(alice, node, template):
    now = timezone.now()
    env = Env.objects.create(owner=alice, name="demo", start_at=now, end_at=now + timezone.timedelta(hours=1))
    return Vm.objects.create(env=env, node=node, template=template, name="web", status="running", cpu_num=1,
                             mem_mb=64, disk_mb=20, mac=node.mac_for_index(2), ip=node.ip_for_index(2))


def page(client, vm) -> str:
    response = client.get(reverse("vms:detail", args=[vm.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_it_shows_what_the_node_dropped_for_this_vm(client, alice, vm, monkeypatch):
    monkeypatch.setattr(MemoryFirewall, "drops_per_vm", lambda self: {
        vm.ip: {"egress_denied": 12, "blacklisted": 4, "private_network": 9},
        "10.100.0.99": {"egress_denied": 1000, "blacklisted": 1000, "private_network": 1000},
    }, raising=False)
    client.force_login(alice)
    assert "Blocked: 12 outgoing (egress denied), 4 blacklisted, 9 to private networks" in page(client, vm)


def test_it_shows_zeros_for_a_vm_the_firewall_never_refused(client, alice, vm, monkeypatch):
    monkeypatch.setattr(MemoryFirewall, "drops_per_vm", lambda self: {}, raising=False)
    client.force_login(alice)
    assert "Blocked: 0 outgoing (egress denied), 0 blacklisted, 0 to private networks" in page(client, vm)


def test_it_says_unknown_when_the_node_cannot_be_asked(client, alice, vm, monkeypatch):
    def unreachable(self):
        raise OSError("nft: permission denied")

    monkeypatch.setattr(MemoryFirewall, "drops_per_vm", unreachable, raising=False)
    client.force_login(alice)
    body = page(client, vm)
    assert "Blocked: unknown (its node could not be asked)" in body
    assert "permission denied" not in body


def test_it_shows_nothing_for_a_destroyed_vm(client, alice, vm):
    Vm.objects.filter(pk=vm.pk).update(status="destroyed", ip=None, mac=None)
    client.force_login(alice)
    assert "Blocked:" not in page(client, vm)


def test_it_asks_the_node_once_for_a_few_seconds(vm, settings, monkeypatch):
    settings.TT_NODE_PROBE_CACHE = 60
    asked = []

    def counting(self):
        asked.append(1)
        return {vm.ip: {"egress_denied": len(asked), "blacklisted": 0}}

    monkeypatch.setattr(MemoryFirewall, "drops_per_vm", counting, raising=False)
    once = {"egress_denied": 1, "blacklisted": 0, "private_network": 0}
    assert blocked.blocked_counts(vm.node, vm.ip) == once
    assert blocked.blocked_counts(vm.node, vm.ip) == once
    assert len(asked) == 1
