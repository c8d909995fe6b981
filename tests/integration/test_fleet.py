"""A real second node on this machine: node `b`, with its own bridge, storage pool, nftables
table and VM network, against the same libvirtd, run by its own task cluster (`manage.py
tt_node_worker b ...`, which prepares it and becomes the cluster of queue `b`), beside the
site's cluster that serves node `itest`. PostgreSQL holds the state, Redis is the broker.

- An Env placed on b boots there, only b's cluster runs its operation, and its forwarded
  ports answer from the client namespace.
- Killing b's cluster (SIGKILL to its process group) marks b down within the threshold;
  an operation queued for b fails as node_down; new Envs land on itest; b's VMs are shown
  unknown and kept. When b's cluster comes back, b is up and its VMs are real again.

Runs in CI's PostgreSQL pass (with TT_REDIS_URL); on SQLite it is skipped, saying so: a
second host cannot share a SQLite file.
"""

from __future__ import annotations

import time

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.urls import reverse

from envs.models import Env
from envs.services import env_create, env_destroy
from nodes.models import Node
from operations import lease
from operations.models import Operation
from tests.api_support import client_for
from tests.integration import netlab
from tests.integration.cluster import Cluster, wait_for, wait_until_done
from tests.integration.conftest import _clean_node, public_port
from vms.models import Vm
from vms.new_vms import NewVm
from vms.services import vm_stop

pytestmark = pytest.mark.django_db(transaction=True)

B_NODE = dict(
    name="b", uri="qemu:///system", public_host=netlab.NODE_ADDR, vm_network="10.104.0.0/16",
    bridge="ttbr-itb", pool_name="tt-itb-pool", network_name="tt-itb-net", port_min=32000, port_max=32999,
)
# Beats every second; three missed and the node is down. The clusters get the same.
BEAT, DOWN_AFTER = 1, 3
SWEEP_SLACK = 3  # the site's keeper sweeps once a beat; a loaded CI machine may lag


def node_worker_command() -> tuple[str, ...]:
    opts = [f"--{key.replace('_', '-')}={value}" for key, value in B_NODE.items() if key != "name"]
    return ("tt_node_worker", B_NODE["name"], *opts, "--template", "busybox")


@pytest.fixture
def shared_state(db, settings):
    if connection.vendor != "postgresql":
        pytest.skip("several hosts share PostgreSQL and Redis: this runs in CI's PostgreSQL pass")
    assert "redis" in django_settings.Q_CLUSTER, (
        "set TT_REDIS_URL: a node with its own cluster takes its tasks from Redis (.ci/run does)")
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}  # tasks go to the broker
    settings.TT_NODE_BEAT, settings.TT_NODE_DOWN_AFTER = BEAT, DOWN_AFTER


@pytest.fixture
def clusters(qnode, shared_state, tmp_path):
    env = {"TT_NODE_BEAT": str(BEAT), "TT_NODE_DOWN_AFTER": str(DOWN_AFTER)}
    _clean_node(B_NODE)
    site = Cluster(tmp_path / "site.log", **env)
    b = Cluster(tmp_path / "b.log", command=node_worker_command(), **env)
    site.start()
    b.start()
    yield site, b
    b.close()
    site.close()
    _clean_node(B_NODE)
    node = Node.objects.filter(name="b").first()
    if node is not None:
        from nodes.registry import forget_engines, get_engine

        get_engine(node).firewall.rebuild([])
        forget_engines()


def wait_until_up(name: str, cluster: Cluster, deadline: float) -> Node:
    """Until the node's own cluster beats (it prepares the node first: a minute at most)."""

    def up() -> bool:
        node = Node.objects.select_related("heartbeat").filter(name=name, own_cluster=True).first()
        beat = getattr(node, "heartbeat", None) if node else None
        return bool(beat and node.down_since is None and time.time() - beat.beat_at.timestamp() < BEAT * 2)

    try:
        wait_for(up, deadline, f"node {name}'s cluster to beat")
    except AssertionError:
        raise AssertionError(f"node {name} never came up; its cluster's log:\n{cluster.log()[-6000:]}") \
            from None
    return Node.objects.get(name=name)


def create(owner, name: str, vms: list[str]) -> Operation:
    return env_create(owner=owner, by=owner, name=name,
                      vms=[NewVm(name=v, template="tt/busybox", mem_mb=128, ports=[80]) for v in vms])


def why(op: Operation, cluster: Cluster | None = None) -> str:
    said = f"{op.error_code}: {op.error_message}\n{op.log}"
    return f"{said}\n{cluster.log()[-4000:]}" if cluster else said


def worker_pid(op: Operation) -> int:
    return int(op.worker.split("/", 1)[0].rsplit(":", 1)[1])


def test_node_b_runs_its_own_work_and_is_seen_down_when_its_cluster_dies(qnode, clusters, alice,
                                                                          quotas_out_of_the_way):
    site, b_cluster = clusters
    b = wait_until_up("b", b_cluster, time.time() + 180)

    # Placed on b: the node the site serves is drained for this one create.
    Node.objects.filter(pk=qnode.pk).update(drained=True)
    op = create(alice, "on-b", ["web1", "web2"])
    Node.objects.filter(pk=qnode.pk).update(drained=False)
    op = wait_until_done(op, time.time() + 240)
    assert op.status == "succeeded", why(op, b_cluster)
    env_b = Env.objects.get(pk=op.env_id)
    assert set(env_b.vms.values_list("node__name", flat=True)) == {"b"}
    # Only b's cluster ran it: its worker serves queue b and is a process of that cluster.
    assert lease.queue_of_worker(op.worker) == "b" and b_cluster.runs(worker_pid(op)), op.worker
    for vm in env_b.vms.all():
        netlab.wait_for_http(f"http://{b.public_host}:{public_port(vm, 80)}/", expect=vm.ip)

    # The site's cluster runs the work of the node it serves.
    op = wait_until_done(create(alice, "on-itest", ["web"]), time.time() + 240)
    assert op.status == "succeeded", why(op)
    assert op.node == qnode and lease.queue_of_worker(op.worker) == django_settings.Q_CLUSTER["name"]
    assert site.runs(worker_pid(op)) and not b_cluster.runs(worker_pid(op))

    # b's cluster dies. Work asked of b meanwhile is queued for b, and fails once b is down.
    killed_at = b_cluster.kill()
    web1 = env_b.vms.get(name="web1")
    stop = vm_stop(vm=web1, by=alice)
    assert stop.status == "queued" and stop.node == b
    threshold = BEAT * DOWN_AFTER + SWEEP_SLACK

    def marked_down() -> bool:
        b.refresh_from_db()
        return b.down_since is not None

    wait_for(marked_down, killed_at + threshold + 30, "node b to be marked down")
    took = b.down_since.timestamp() - killed_at
    print(f"fleet: node b marked down {took:.1f} s after its cluster was killed (threshold {threshold} s)")
    assert took <= threshold, f"marked down {took:.1f} s after the kill"
    stop = wait_until_done(stop, time.time() + 30)
    assert (stop.status, stop.error_code) == ("failed", "node_down"), stop.log
    web1.refresh_from_db()
    assert web1.status == Vm.Status.RUNNING  # settled to what the engine says; never deleted

    # New Envs land on the node that is up.
    op = wait_until_done(create(alice, "after", ["web"]), time.time() + 240)
    assert op.status == "succeeded", why(op)
    assert set(Env.objects.get(pk=op.env_id).vms.values_list("node__name", flat=True)) == {"itest"}
    api = client_for(alice)
    shown = api.get(reverse("api:env-detail", args=[env_b.pk])).json()
    assert {vm["status"] for vm in shown["vms"]} == {"unknown"}
    # Still serving: a node whose cluster is down may well run its VMs.
    netlab.wait_for_http(f"http://{b.public_host}:{public_port(web1, 80)}/", expect=web1.ip)

    # b's cluster comes back: b is up, its VMs are real again, and it can be cleaned up.
    b_cluster.start()
    wait_until_up("b", b_cluster, time.time() + 180)
    shown = api.get(reverse("api:env-detail", args=[env_b.pk])).json()
    assert {vm["status"] for vm in shown["vms"]} == {"running"}
    for env in Env.objects.live():
        op = wait_until_done(env_destroy(env=env, by=alice), time.time() + 120)
        assert op.status == "succeeded", f"{env.name}: {op.error_code}: {op.error_message}"
    assert not Vm.objects.live().exists()
