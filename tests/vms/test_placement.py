"""Placement: filters (each names the nodes it removed), then a weigher; one Env, one node
while it fits; an Env that fits nowhere refused up front with 409 no_capacity."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from engines.docker.engine import DockerEngine
from engines.specs import Feature
from envs.models import Env
from envs.services import env_create
from nodes.models import Node, NodeHeartbeat
from tests.api_support import client_for
from tests.support import T0, refused
from tests.ttportal.test_settings import start_django
from ttportal.errors import ConflictingInput, NoCapacity, Unsupported
from vms import placement
from vms.models import PortMapping, Vm, VmTemplate
from vms.new_vms import NewVm, pick_node, wanted_features
from vms.placement import Ask, Placer
from vms.services import vm_add

TEST_URI = "test:///default"


def other_node(name: str, index: int, **fields) -> Node:
    fields = {"public_host": f"203.0.113.{20 + index}", "vm_network": f"10.{110 + index}.0.0/16",
              "port_min": 30000, "port_max": 30099, **fields}
    return Node.objects.create(name=name, uri=TEST_URI, **fields)


def vms(n: int, **kwargs) -> list[NewVm]:
    return [NewVm(name=f"vm{i}", template="tt/busybox", **kwargs) for i in range(n)]


def nodes_of(env: Env) -> list[str]:
    return sorted(env.vms.values_list("node__name", flat=True))


def ask(template, *, cpu: int = 1, mem: int = 256, ports=()) -> Ask:
    wanted = wanted_features(Vm.NetKind.NAT, rand_uuid=True, keep_image=False, disk_mb=None,
                             template=template)
    return Ask.of(template, cpu, mem, wanted, ports)


def place(template, **kwargs) -> Node:
    return Placer().place(ask(template, **kwargs), "template")


def reason(template, node: Node, **kwargs) -> tuple[str, str]:
    """(the filter that removes `node`, why) for one VM."""
    check, why = Placer().refusals(ask(template, **kwargs))[node.pk]
    return check.__name__, why


# --- the filters, one by one ---------------------------------------------------------


def test_it_filters_a_node_full_by_cpu(alice, node, template):
    node.cpu_capacity = 2
    node.save()
    env_create(owner=alice, by=alice, name="one", vms=vms(1))
    assert reason(template, node, cpu=2) == ("cpu", "1 vCPUs free, 2 asked")
    assert place(template, cpu=1) == node


def test_it_filters_a_node_full_by_memory(alice, node, template):
    node.mem_capacity_mb = 512
    node.save()
    env_create(owner=alice, by=alice, name="one", vms=vms(1, mem_mb=256))
    assert reason(template, node, mem=512) == ("memory", "256 MiB free, 512 MiB asked")
    assert place(template, mem=256) == node


def test_it_filters_a_node_without_enough_public_ports(alice, node, template):
    node.port_min, node.port_max = 20000, 20002  # three ports per protocol
    node.save()
    env_create(owner=alice, by=alice, name="one", vms=vms(1, ports=[22, 80]))
    assert reason(template, node, ports=[("tcp", 22), ("tcp", 80)]) == ("ports", "1 tcp ports free, 2 asked")
    assert place(template, ports=[("tcp", 22), ("udp", 53)]) == node  # udp has its own three


def test_it_filters_a_node_without_a_free_address(alice, node, template):
    node.vm_network = "10.100.7.0/30"  # one usable address: .2
    node.save()
    env_create(owner=alice, by=alice, name="one", vms=vms(1))
    assert reason(template, node) == ("addresses", "no free address in 10.100.7.0/30")


def test_it_counts_destroyed_vms_as_free(alice, node, template):
    node.cpu_capacity = 1
    node.save()
    env = env_create(owner=alice, by=alice, name="one", vms=vms(1, ports=[22])).env
    env.vms.update(status=Vm.Status.DESTROYED)
    assert Placer().refusals(ask(template, ports=[("tcp", 22)])) == {}


def test_it_filters_a_disabled_node(node, template):
    spare = other_node("spare", 1, enabled=False)
    assert reason(template, spare) == ("enabled", "disabled")
    assert place(template) == node


def test_it_filters_a_drained_node(alice, node, template, make_env):
    env = make_env(alice, name="running")
    node.drained = True
    node.save()
    spare = other_node("spare", 1)
    assert reason(template, node) == ("drained", "drained")
    assert place(template) == spare
    # Draining places nothing new there; what runs there keeps running.
    assert set(env.vms.values_list("status", flat=True)) == {Vm.Status.RUNNING}


def test_it_filters_a_node_marked_down(node, template):
    spare = other_node("spare", 1)
    Node.objects.filter(pk=node.pk).update(down_since=timezone.now())
    assert reason(template, Node.objects.get(pk=node.pk)) == ("up", "down")
    assert place(template) == spare


def test_it_filters_a_node_of_its_own_cluster_whose_beat_is_late(node, template, settings, time_machine):
    settings.TT_NODE_BEAT, settings.TT_NODE_DOWN_AFTER = 10, 3
    time_machine.move_to(T0, tick=False)
    b = other_node("b", 1, own_cluster=True)
    assert reason(template, b) == ("up", "down: its cluster has never beaten")
    NodeHeartbeat.objects.create(node=b, beat_at=T0, worker="b:1", ports_free=100, addresses_free=10,
                                 vms_running=0)
    time_machine.move_to(T0 + timedelta(seconds=30), tick=False)  # three beats missed: not yet late
    assert b.pk not in Placer().refusals(ask(template))
    time_machine.move_to(T0 + timedelta(seconds=31), tick=False)
    assert reason(template, b) == ("up", "down: no beat for 31 s")


def test_a_node_the_site_serves_needs_no_beat_of_its_own(node, template):
    # One host: the site's cluster runs the node's tasks; it is up while the site is.
    assert not NodeHeartbeat.objects.exists()
    assert place(template) == node


def test_a_full_fleet_refuses_naming_each_node_and_why(alice, node, template, db_state):
    node.cpu_capacity = 1
    node.save()
    other_node("drained", 1, drained=True)
    other_node("gone", 2, down_since=timezone.now())
    other_node("small", 3, cpu_capacity=1)
    with refused(db_state, NoCapacity) as caught:
        env_create(owner=alice, by=alice, name="e", vms=vms(1, cpu_num=2))
    message = caught.value.message
    for said in ("local-test: 1 vCPUs free, 2 asked", "small: 1 vCPUs free, 2 asked", "drained: drained",
                 "gone: down"):
        assert said in message, message


def test_it_refuses_a_template_no_enabled_node_runs(alice, node, template, db_state):
    VmTemplate.objects.create(name="tt/docker-only", path="x", compatible_engines=["docker"], size_mb=20,
                              min_mem_mb=64)
    with refused(db_state, ConflictingInput) as caught:
        env_create(owner=alice, by=alice, name="e", vms=[NewVm(name="a", template="tt/docker-only")])
    assert caught.value.field == "vms[0].template"
    assert "no enabled node runs an engine this template supports" in caught.value.message


def test_it_refuses_features_no_node_offers(alice, node, template, db_state):
    other_node("fc", 1, kind="firecracker")
    VmTemplate.objects.create(name="tt/fc", path="x", compatible_engines=["firecracker"], size_mb=20,
                              min_mem_mb=64)
    # Firecracker cannot randomise the UUID: a feature, not the load, is at fault.
    with refused(db_state, Unsupported) as caught:
        env_create(owner=alice, by=alice, name="e", vms=[NewVm(name="a", template="tt/fc")])
    assert caught.value.field == "vms[0].template"
    assert caught.value.code == "unsupported_feature"
    env_create(owner=alice, by=alice, name="e", vms=[NewVm(name="a", template="tt/fc", rand_uuid=False)])


def test_it_still_names_disk_mb_when_only_the_disk_size_is_missing(alice, node, template, db_state,
                                                                   monkeypatch):
    # Docker as an engine that cannot size a disk (it can since issue 22: tests/vms/test_disk_watch.py).
    monkeypatch.setattr(DockerEngine, "features", DockerEngine.features - {Feature.DISK_LIMIT})
    other_node("dock", 1, kind="docker")
    VmTemplate.objects.create(name="tt/dock", path="x", compatible_engines=["docker"], size_mb=20,
                              min_mem_mb=64)
    with refused(db_state, Unsupported) as caught:
        env_create(owner=alice, by=alice, name="e", vms=[NewVm(name="a", template="tt/dock", disk_mb=40)])
    assert caught.value.field == "vms[0].disk_mb"
    assert "cannot give a VM a disk larger than its template's" in caught.value.message


# --- the weigher ------------------------------------------------------------------------


def test_it_spreads_to_the_node_with_the_most_free_memory(node, template):
    node.mem_capacity_mb = 1024
    node.save()
    other_node("big", 1, mem_capacity_mb=4096)
    other_node("small", 2, mem_capacity_mb=2048)
    assert place(template).name == "big"


def test_it_counts_an_unlimited_node_as_the_most_free(node, template):
    other_node("big", 1, mem_capacity_mb=1 << 20)
    assert place(template) == node  # capacity 0: unlimited


def test_it_packs_onto_the_node_with_the_least_free_memory_that_fits(node, template, settings):
    settings.TT_PLACEMENT = "pack"
    other_node("big", 1, mem_capacity_mb=4096)
    other_node("small", 2, mem_capacity_mb=512)
    other_node("tiny", 3, mem_capacity_mb=128)  # too small for 256 MiB
    assert place(template, mem=256).name == "small"
    assert place(template, mem=1024).name == "big"


def test_it_breaks_ties_by_fewer_live_vms_then_by_name(alice, node, template):
    other_node("a-node", 1)
    other_node("z-node", 2)
    assert place(template).name == "a-node"  # all empty, all unlimited: by name
    Node.objects.filter(name="a-node").update(enabled=False)
    env_create(owner=alice, by=alice, name="one", vms=vms(1))  # lands on local-test
    Node.objects.filter(name="a-node").update(enabled=True)
    env_create(owner=alice, by=alice, name="two", vms=vms(1))  # a-node
    assert place(template).name == "z-node"  # the one with no VM


def test_it_rejects_an_unknown_strategy_in_the_settings():
    result = start_django(TT_PLACEMENT="random")
    assert result.returncode != 0
    assert "TT_PLACEMENT must be spread or pack, got 'random'" in result.stderr
    assert start_django(TT_PLACEMENT="pack").returncode == 0


# --- one Env, one node --------------------------------------------------------------------


def test_it_keeps_an_env_on_one_node_when_it_fits(alice, node, template):
    other_node("spare", 1)
    env = env_create(owner=alice, by=alice, name="together", vms=vms(4)).env
    assert nodes_of(env) == ["local-test"] * 4
    assert env.node_count == 1 and not env.spans_nodes


def test_it_spans_nodes_only_when_one_cannot_hold_the_env(alice, node, template, client):
    node.cpu_capacity = 2
    node.save()
    other_node("spare", 1, cpu_capacity=2)
    env = env_create(owner=alice, by=alice, name="wide", vms=vms(3)).env
    assert nodes_of(env) == ["local-test", "local-test", "spare"]
    assert Env.objects.get(pk=env.pk).spans_nodes
    client.force_login(alice)
    assert "spans 2 nodes" in client.get(reverse("envs:detail", args=[env.pk])).content.decode()


def test_the_env_page_says_nothing_of_nodes_for_an_env_on_one(alice, node, template, client):
    env = env_create(owner=alice, by=alice, name="one", vms=vms(2)).env
    client.force_login(alice)
    assert "spans" not in client.get(reverse("envs:detail", args=[env.pk])).content.decode()


def test_it_does_not_overcommit_a_node_within_one_request(alice, node, template, db_state):
    node.cpu_capacity = 2
    node.save()
    with refused(db_state, NoCapacity):
        env_create(owner=alice, by=alice, name="big", vms=vms(3))
    env_create(owner=alice, by=alice, name="fits", vms=vms(2))
    assert Vm.objects.count() == 2


def test_vm_add_prefers_the_node_the_env_is_on(alice, node, template):
    node.mem_capacity_mb = 1024
    node.save()
    env = env_create(owner=alice, by=alice, name="e", vms=vms(1)).env
    other_node("roomy", 1, mem_capacity_mb=1 << 20)  # spread alone would pick it
    vm_add(env=env, spec=NewVm(name="more", template="tt/busybox"), by=alice)
    assert nodes_of(env) == ["local-test", "local-test"]


def test_vm_add_leaves_the_env_s_node_when_it_is_full(alice, node, template):
    node.cpu_capacity = 1
    node.save()
    env = env_create(owner=alice, by=alice, name="e", vms=vms(1)).env
    other_node("spare", 1)
    vm_add(env=env, spec=NewVm(name="more", template="tt/busybox"), by=alice)
    assert nodes_of(env) == ["local-test", "spare"]


def test_pick_node_still_counts_what_a_request_already_placed(node, template):
    node.cpu_capacity = 2
    node.save()
    other_node("spare", 1, cpu_capacity=2)
    wanted = {Feature.START_STOP, Feature.NAT}
    assert pick_node(template, 1, 64, wanted, "t").name == "local-test"
    assert pick_node(template, 1, 64, wanted, "t", {node.pk: (2, 2, 128)}).name == "spare"


def test_placement_reads_the_nodes_in_constant_queries(alice, node, template):
    other_node("spare", 1)
    placer = Placer()
    with CaptureQueriesContext(connection) as one:
        placer.place(ask(template, ports=[("tcp", 22)]), "template")
    with CaptureQueriesContext(connection) as more:
        for _ in range(20):
            placer.place(ask(template, ports=[("tcp", 22)]), "template")
    # The lock on the nodes (SQLite has no row locks: it serialises writers), then the
    # nodes with their heartbeats and use counters: nothing more per VM.
    assert len(one) == 2 and len(more) == 0
    assert "vms_nodeusage" in one[1]["sql"]
    assert "pg_advisory_xact_lock" in one[0]["sql"] or connection.vendor == "sqlite"


# --- refused up front: 409 no_capacity ---------------------------------------------------


def test_it_refuses_an_env_that_fits_nowhere_naming_each_node(alice, node, template, db_state):
    node.cpu_capacity = 2
    node.save()
    other_node("dock", 1, kind="docker")
    other_node("off", 2, enabled=False)
    with refused(db_state, NoCapacity) as caught:
        env_create(owner=alice, by=alice, name="big", vms=[NewVm(name="a", template="tt/busybox", cpu_num=4)])
    assert caught.value.code == "no_capacity"
    assert caught.value.field == "vms[0].template"
    assert caught.value.message == (
        "no node has room: local-test: 2 vCPUs free, 4 asked; "
        "dock: engine docker does not run tt/busybox; off: disabled"
    )


def test_the_api_refuses_an_env_that_fits_nowhere_with_409(alice, node, template, db_state):
    node.mem_capacity_mb = 512
    node.save()
    before = db_state()
    response = client_for(alice).post("/api/envs/", {"name": "big", "vms": [
        {"name": "a", "template": "tt/busybox", "mem_mb": 256},
        {"name": "b", "template": "tt/busybox", "mem_mb": 512},
    ]}, format="json")
    assert response.status_code == 409, response.content
    body = response.json()
    assert (body["code"], body["field"]) == ("no_capacity", "vms[1].template")
    assert body["message"] == "no node has room: local-test: 256 MiB free, 512 MiB asked"
    assert db_state() == before


def test_the_api_refuses_a_vm_add_that_fits_nowhere_with_409(alice, node, template, db_state):
    node.port_min = node.port_max = 20000
    node.save()
    env = env_create(owner=alice, by=alice, name="e", vms=vms(1, ports=[22])).env
    before = db_state()
    body = {"name": "more", "template": "tt/busybox", "ports": [22]}
    response = client_for(alice).post(f"/api/envs/{env.pk}/vms/", body, format="json")
    assert response.status_code == 409, response.content
    assert response.json()["code"] == "no_capacity"
    assert response.json()["message"] == "no node has room: local-test: 0 tcp ports free, 1 asked"
    assert db_state() == before


def test_the_portal_shows_why_an_env_fits_nowhere(alice, node, template, client, db_state):
    node.cpu_capacity = 1
    node.save()
    client.force_login(alice)
    data = {"name": "web", "lifetime_hours": "2", "idempotency_key": "k1",
            "vms-TOTAL_FORMS": "1", "vms-INITIAL_FORMS": "0", "vms-MIN_NUM_FORMS": "1",
            "vms-MAX_NUM_FORMS": "100", "vms-0-name": "vm0", "vms-0-template": str(template.pk),
            "vms-0-cpu_num": "2", "vms-0-mem_mb": "256", "vms-0-disk_mb": "", "vms-0-ports": "",
            "vms-0-net_kind": "nat"}
    before = db_state()
    response = client.post(reverse("envs:create"), data)
    assert response.status_code == 200
    assert "no node has room: local-test: 1 vCPUs free, 2 asked" in response.content.decode()
    assert db_state() == before


def test_a_refusal_names_at_most_ten_nodes(node, template):
    for i in range(12):
        other_node(f"n{i:02}", i + 1, enabled=False)
    node.cpu_capacity = 1
    node.save()
    with pytest.raises(NoCapacity) as caught:
        place(template, cpu=2)
    message = caught.value.message
    assert message.startswith("no node has room: local-test: 1 vCPUs free, 2 asked; n00: disabled")
    assert message.endswith("; n08: disabled; and 3 more")


def test_allocation_still_says_resources_exhausted_for_a_lost_race(alice, node, template, monkeypatch):
    # Placement saw a free port; a concurrent request took it before allocation did.
    node.port_min = node.port_max = 20000
    node.save()
    monkeypatch.setattr(placement, "FILTERS", tuple(f for f in placement.FILTERS if f is not placement.ports))
    env_create(owner=alice, by=alice, name="first", vms=vms(1, ports=[22]))
    response = client_for(alice).post("/api/envs/", {"name": "second", "vms": [
        {"name": "a", "template": "tt/busybox", "ports": [22]}]}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "resources_exhausted"
    assert PortMapping.objects.count() == 1
