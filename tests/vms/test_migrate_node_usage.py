"""A database made before the nodes' use counters (vms 0011) gets them filled from what it
holds: migrated with VMs live and destroyed, suspended ones, warm spares of a saved and a
paused pool, TCP and UDP ports and snapshots on two nodes (and a third with nothing), each
node's counters equal a count from scratch, and from then on the triggers keep them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.migration_support import latest, migrate
from vms import node_usage
from vms.models import NodeUsage, Vm

BEFORE = [("vms", "0010_node_app")]


def fill(apps) -> dict:
    """Rows as the code before the counters made them, through its historical models."""
    user = apps.get_model("auth", "User").objects.create(username="mig-usage")
    node_model = apps.get_model("nodes", "Node")
    nodes = [node_model.objects.create(name=f"mig-{i}", uri="test:///default", public_host=f"192.0.2.{i + 1}",
                                       vm_network=f"10.{150 + i}.0.0/16") for i in range(3)]
    template = apps.get_model("vms", "VmTemplate").objects.create(name="mig/t", path="t.qcow2")
    now = timezone.now()
    env_model = apps.get_model("envs", "Env")
    env = env_model.objects.create(owner=user, name="mig", start_at=now, end_at=now + timedelta(hours=1))
    vm_model = apps.get_model("vms", "Vm")
    made = []
    shapes = [("running", 1, 256, 1024), ("suspended", 2, 512, 2048), ("destroyed", 4, 1024, 4096),
              ("error", 1, 128, 512), ("stopped", 2, 64, 100)]
    for i, (status, cpu, mem, disk) in enumerate(shapes):
        node = nodes[i % 2]
        made.append(vm_model.objects.create(
            env=env, node=node, template=template, name=f"vm{i}", status=status, cpu_num=cpu, mem_mb=mem,
            disk_mb=disk, mac=f"52:54:00:00:00:{i + 2:02x}", ip=f"10.{150 + i % 2}.0.{i + 2}"))
    for keep in ("saved", "paused"):  # one pool per node and template
        pool_template = apps.get_model("vms", "VmTemplate").objects.create(name=f"mig/{keep}", path="p.qcow2")
        pool_env = env_model.objects.create(owner=user, name=f"pool-{keep}", start_at=now,
                                            end_at=now + timedelta(days=365))
        pool = apps.get_model("vms", "WarmPool").objects.create(node=nodes[1], template=pool_template,
                                                                env=pool_env, keep=keep)
        vm_model.objects.create(env=pool_env, node=nodes[1], template=pool_template, name="spare",
                                status="suspended", cpu_num=1, mem_mb=300, disk_mb=20, warm_pool=pool)
    port_model = apps.get_model("vms", "PortMapping")
    ports = [(made[0], "tcp"), (made[0], "udp"), (made[1], "tcp"), (made[3], "tcp")]
    for i, (vm, protocol) in enumerate(ports):
        port_model.objects.create(vm=vm, node_id=vm.node_id, protocol=protocol, inner_port=1000 + i,
                                  public_port=20000 + i)
    snapshot_model = apps.get_model("vms", "Snapshot")
    for vm in (made[0], made[1], made[1], made[2]):  # the destroyed VM's snapshot counts nothing
        snapshot_model.objects.create(vm=vm, name=f"s{snapshot_model.objects.filter(vm=vm).count()}")
    return {"nodes": [n.pk for n in nodes], "suspended": made[1].pk}


@pytest.mark.django_db(transaction=True)
def test_migrating_fills_every_node_s_counters_from_what_it_holds():
    made = fill(migrate(BEFORE))

    migrate(latest())

    a, b, empty = made["nodes"]
    assert node_usage.drift() == {}
    counters = node_usage.kept(made["nodes"])
    assert counters[a] == {"vms": 2, "cpu": 3, "mem_mb": 320, "disk_mb": 1124, "saved_mb": 0,
                           "snapshots_mb": 1024, "tcp_ports": 1, "udp_ports": 1}
    # The suspended VM's memory and the saved pool's spare's are on disk; the paused pool's is not.
    assert counters[b] == {"vms": 4, "cpu": 5, "mem_mb": 1240, "disk_mb": 2600, "saved_mb": 812,
                           "snapshots_mb": 4096, "tcp_ports": 2, "udp_ports": 0}
    assert counters[empty] == dict.fromkeys(NodeUsage.COUNTERS, 0)
    # From now on the database keeps them.
    Vm.objects.filter(pk=made["suspended"]).update(status=Vm.Status.RUNNING)
    assert node_usage.kept([b])[b]["saved_mb"] == 300
    assert node_usage.drift() == {}
