"""Placement counts the VMs of the same request, not only those already saved."""

from __future__ import annotations

import pytest

from engines.models import Node
from envs.models import Env
from envs.services import env_create
from ttportal.errors import Exhausted
from vms.models import Vm
from vms.specs import NewVm


def vms(n: int) -> list[NewVm]:
    return [NewVm(name=f"vm{i}", template="tt/busybox") for i in range(n)]


def test_it_does_not_overcommit_a_node_within_one_request(alice, node, template):
    Node.objects.filter(pk=node.pk).update(cpu_capacity=2)
    with pytest.raises(Exhausted):
        env_create(owner=alice, by=alice, name="big", vms=vms(3))
    assert not Env.objects.exists() and not Vm.objects.exists()
    env_create(owner=alice, by=alice, name="fits", vms=vms(2))
    assert Vm.objects.count() == 2


def test_it_spreads_one_requests_vms_over_the_least_loaded_nodes(alice, node, template):
    Node.objects.create(name="spare", uri="qemu+ssh://spare/system", public_host="198.51.100.8")
    env_create(owner=alice, by=alice, name="spread", vms=vms(4))
    per_node = sorted(Node.objects.filter(vms__isnull=False).values_list("vms__node__name", flat=True))
    assert per_node == ["local-test", "local-test", "spare", "spare"]
