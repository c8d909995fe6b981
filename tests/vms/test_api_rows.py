"""The API's VM list is built from plain rows (vms/api_rows.py), a single VM through
VmSerializer: each VM must read the same in both, in every state a VM can be in."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.api_support import client_for
from tests.support import T0
from vms.models import Vm
from vms.new_vms import NewVm

pytestmark = pytest.mark.usefixtures("frozen_clock")


@pytest.fixture
def vms(alice, make_env, node, template) -> list[Vm]:
    """VMs that differ in every field the list shows."""
    specs = [NewVm(name="plain", template=template.name),
             NewVm(name="ported", template=template.name, ports=[22, 80, "53/udp"]),
             NewVm(name="gone", template=template.name, ports=[22]),
             NewVm(name="odd", template=template.name, ports=[8080])]
    env = make_env(alice, name="states", vms=specs)
    make_env(alice, name="second", vms=1)
    by_name = {vm.name: vm for vm in Vm.objects.all()}
    gone = by_name["gone"]
    gone.port_mappings.all().delete()
    Vm.objects.filter(pk=gone.pk).update(status=Vm.Status.DESTROYED, mac=None, ip=None,
                                         destroyed_at=T0 + timedelta(microseconds=123456))
    Vm.objects.filter(pk=by_name["odd"].pk).update(
        net_blacklist=["192.0.2.1", "198.51.100.7"], features=["guest-agent"], user_data="#cloud-config\n",
        start_kind=Vm.StartKind.WARM, keep_image=True, rand_uuid=False, uuid="", addr="",
        created_at=timezone.now() - timedelta(days=3, microseconds=7))
    assert env.vms.count() == 4
    return list(Vm.objects.order_by("pk"))


def listed(api, path: str) -> list[dict]:
    """Every VM of the list at `path`, page after page."""
    items, url = [], path
    while url:
        body = api.get(url).json()
        items += body["results"]
        url = body["next"]
    return items


def shown_alone(api, item: dict, suffix: str = "") -> dict:
    response = api.get(f"/api/vms/{item['id']}{suffix}")
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("who", ["alice", "olga"])
def test_each_vm_of_the_list_reads_as_the_vm_alone(request, who, vms):
    api = client_for(request.getfixturevalue(who))
    items = listed(api, "/api/vms/?page_size=2")
    assert sorted(item["id"] for item in items) == [vm.pk for vm in vms]
    for item in items:
        assert item == shown_alone(api, item, "/")
        assert list(item) == list(shown_alone(api, item, "/"))  # the fields' order too


def test_a_vm_on_a_node_that_is_down_reads_unknown_in_both(alice, vms, node):
    node.down_since = timezone.now()
    node.save(update_fields=["down_since"])
    api = client_for(alice)
    items = listed(api, "/api/vms/")
    statuses = {item["name"]: item["status"] for item in items}
    assert statuses["plain"] == Vm.UNKNOWN and statuses["gone"] == Vm.Status.DESTROYED
    for item in items:
        assert item == shown_alone(api, item, "/")


def test_a_format_suffix_reaches_the_urls_of_the_list(alice, vms):
    api = client_for(alice)
    items = listed(api, "/api/vms.json")
    assert items and all(item["url"].endswith(f"/api/vms/{item['id']}.json") for item in items)
    for item in items:
        assert item == shown_alone(api, item, ".json")


def test_filters_and_ordering_choose_the_vms_and_their_order(alice, vms):
    api = client_for(alice)
    names = [i["name"] for i in listed(api, "/api/vms/?ordering=-name&page_size=2")]
    assert names == sorted((vm.name for vm in vms), reverse=True)
    assert [i["name"] for i in listed(api, "/api/vms/?live=false")] == ["gone"]
    assert {i["name"] for i in listed(api, "/api/vms/?status=running")} == {"plain", "ported", "odd", "vm0"}
