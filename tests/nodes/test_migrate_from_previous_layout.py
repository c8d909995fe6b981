"""A database made before Node and NodeHeartbeat moved from the `engines` label to `nodes`
keeps every row and every link once migrated: the models' tables stay where they were
(engines_node, engines_nodeheartbeat) and only Django's idea of who owns them changes.

The database is taken back to the last migrations of that layout, filled through the
models as they were then (nodes, heartbeats, VMs on them, their ports, a warm pool, an
operation of a node, a permission on nodes), and migrated forward.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from nodes.models import Node, NodeHeartbeat
from operations.models import Operation
from tests.migration_support import latest, migrate
from vms.models import PortMapping, Vm, WarmPool

# The last migrations before the move. "nodes" at None: that app did not exist.
PREVIOUS_LAYOUT = [
    ("engines", "0005_node_disk"),
    ("nodes", None),
    ("vms", "0009_live_vm_index_disk"),
    ("envs", "0015_disk_watch"),
]


def fill_the_previous_layout(apps) -> dict:
    """Rows as today's main made them, through its historical models."""
    user = apps.get_model("auth", "User").objects.create(username="mig-alice")
    node_model = apps.get_model("engines", "Node")
    a = node_model.objects.create(name="mig-a", uri="test:///default", public_host="192.0.2.1",
                                  vm_network="10.140.0.0/16", own_cluster=True, drained=True)
    b = node_model.objects.create(name="mig-b", uri="qemu:///system", public_host="192.0.2.2",
                                  vm_network="10.141.0.0/16", down_since=timezone.now(),
                                  disk_capacity_mb=4096)
    apps.get_model("engines", "NodeHeartbeat").objects.create(
        node=a, beat_at=timezone.now(), worker="w1", ports_free=10, addresses_free=20, vms_running=1,
        disk_total_mb=100, disk_free_mb=50)
    template = apps.get_model("vms", "VmTemplate").objects.create(name="mig/t", path="t.qcow2")
    now = timezone.now()
    env = apps.get_model("envs", "Env").objects.create(owner=user, name="mig", start_at=now,
                                                       end_at=now + timedelta(hours=1))
    vm_model = apps.get_model("vms", "Vm")
    vm_a = vm_model.objects.create(env=env, node=a, template=template, name="one", cpu_num=1, mem_mb=64,
                                   disk_mb=64, mac="52:54:00:00:00:02", ip="10.140.0.2", status="running")
    vm_b = vm_model.objects.create(env=env, node=b, template=template, name="two", cpu_num=1, mem_mb=64,
                                   disk_mb=64, mac="52:54:00:00:00:03", ip="10.141.0.3")
    port = apps.get_model("vms", "PortMapping").objects.create(vm=vm_a, node=a, protocol="tcp", inner_port=80,
                                                                public_port=20001)
    pool_env = apps.get_model("envs", "Env").objects.create(owner=user, name="mig-pool", start_at=now,
                                                            end_at=now + timedelta(days=365))
    pool = apps.get_model("vms", "WarmPool").objects.create(node=b, template=template, env=pool_env)
    op = apps.get_model("envs", "Operation").objects.create(kind="vm_start", env=env, vm=vm_b, node=b)
    # A group allowed to see nodes, by the permission as it was named then.
    content_type, _ = apps.get_model("contenttypes", "ContentType").objects.get_or_create(
        app_label="engines", model="node")
    permission, _ = apps.get_model("auth", "Permission").objects.get_or_create(
        content_type=content_type, codename="view_node", defaults={"name": "Can view node"})
    group = apps.get_model("auth", "Group").objects.create(name="mig-node-watchers")
    group.permissions.add(permission)
    return dict(a=a.pk, b=b.pk, vm_a=vm_a.pk, vm_b=vm_b.pk, port=port.pk, pool=pool.pk, op=op.pk,
                content_type=content_type.pk, permission=permission.pk)


@pytest.mark.django_db(transaction=True)
def test_a_database_of_the_previous_layout_keeps_every_node_and_link():
    made = fill_the_previous_layout(migrate(PREVIOUS_LAYOUT))

    migrate(latest())

    a, b = Node.objects.get(pk=made["a"]), Node.objects.get(pk=made["b"])
    assert (a.name, a.vm_network, a.own_cluster, a.drained) == ("mig-a", "10.140.0.0/16", True, True)
    assert (b.name, b.disk_capacity_mb, b.down_since is not None) == ("mig-b", 4096, True)
    beat = NodeHeartbeat.objects.get(node=a)
    assert (beat.worker, beat.ports_free, beat.disk_free_mb) == ("w1", 10, 50)
    assert a.heartbeat == beat
    assert Vm.objects.get(pk=made["vm_a"]).node == a
    assert Vm.objects.get(pk=made["vm_b"]).node == b
    assert set(a.vms.values_list("name", flat=True)) == {"one"}
    assert PortMapping.objects.get(pk=made["port"]).node == a
    assert list(a.port_mappings.values_list("public_port", flat=True)) == [20001]
    assert WarmPool.objects.get(pk=made["pool"]).node == b
    assert Operation.objects.get(pk=made["op"]).node == b
    assert list(b.operations.values_list("pk", flat=True)) == [made["op"]]
    # The tables kept their names.
    assert Node._meta.db_table == "engines_node" and NodeHeartbeat._meta.db_table == "engines_nodeheartbeat"
    # Who could see nodes still can: the content type (and its permissions) followed the model.
    content_type = ContentType.objects.get_for_model(Node)
    assert content_type.pk == made["content_type"]
    assert not ContentType.objects.filter(app_label="engines").exists()
    watchers = Group.objects.get(name="mig-node-watchers")
    assert list(watchers.permissions.values_list("pk", flat=True)) == [made["permission"]]
    assert watchers.permissions.get().content_type.app_label == "nodes"


@pytest.mark.django_db(transaction=True)
def test_the_foreign_keys_still_hold_in_the_database():
    made = fill_the_previous_layout(migrate(PREVIOUS_LAYOUT))
    migrate(latest())

    with connection.cursor() as cursor:
        references = {
            (table, column): connection.introspection.get_relations(cursor, table).get(column)
            for table, column in [("vms_vm", "node_id"), ("vms_portmapping", "node_id"),
                                  ("vms_warmpool", "node_id"), ("envs_operation", "node_id"),
                                  ("engines_nodeheartbeat", "node_id")]
        }
    assert all(target == ("id", "engines_node") for target in references.values()), references
    # The database's own constraint still refuses a VM on a node that is not there.
    with pytest.raises(IntegrityError), transaction.atomic():
        Vm.objects.filter(pk=made["vm_a"]).update(node_id=made["b"] + 1000)
        connection.check_constraints()
