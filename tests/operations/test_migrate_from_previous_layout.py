"""A database made by the layout before the operations and nodes apps (Operation in envs,
Node in engines, every task in envs.tasks) migrates to today's without losing anything:
its operations (with their Env, VM, snapshot, node and requester), their kinds, statuses
and errors, the notifications that name them, the permissions on them, and the
schedules, whose task paths now resolve to the tasks where they live.

The old layout is rebuilt by migrating this test's database back to the last migrations
of that layout; its rows are written with the historical models of that state.
"""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from django.utils.module_loading import import_string

# The last migration of each project app before the operations and nodes apps existed
# (`engines` is now the label of nodes.history). Apps that did not exist then are migrated
# to zero.
PREVIOUS_LAYOUT = {
    "accounts": "0005_quota_ports",
    "engines": "0005_node_disk",
    "envs": "0015_disk_watch",
    "notifications": "0002_schedule",
    "vms": "0009_live_vm_index_disk",
}
NEW_APPS = ("operations", "nodes")

# The schedules the previous layout's migrations made, by name, with their task paths.
PREVIOUS_SCHEDULES = {
    "tt: expire envs": "envs.tasks.expire_envs",
    "tt: expire snapshots": "envs.tasks.expire_snapshots",
    "tt: reconcile nodes": "envs.tasks.reconcile_nodes",
    "tt: recover operations": "envs.tasks.recover_operations",
    "tt: fleet": "envs.tasks.fleet_sweep",
    "tt: disk watch": "envs.tasks.disk_watch",
    "tt: warm pools": "envs.tasks.warm_tend_all",
    "tt: notifications": "notifications.tasks.sweep",
    "tt: node n1 heartbeat": "envs.tasks.node_beat",  # what tt_node_worker registered
}

pytestmark = pytest.mark.django_db(transaction=True)


def _executor() -> MigrationExecutor:
    return MigrationExecutor(connection)


def _targets(executor: MigrationExecutor, layout: dict[str, str] | None):
    leaves = executor.loader.graph.leaf_nodes()
    if layout is None:
        return leaves
    targets = []
    for app, name in leaves:
        if app in NEW_APPS:
            targets.append((app, None))
        else:
            targets.append((app, layout.get(app, name)))
    return targets


def _migrate(layout: dict[str, str] | None):
    """Migrate to `layout` (None: today's); return the historical apps of that state."""
    executor = _executor()
    targets = _targets(executor, layout)
    executor.migrate(targets)
    return _executor().loader.project_state([t for t in targets if t[1] is not None]).apps


def _old_world(apps) -> dict:
    """Rows as the previous layout's code wrote them."""
    User = apps.get_model("auth", "User")
    Node = apps.get_model("engines", "Node")
    Template = apps.get_model("vms", "VmTemplate")
    Env = apps.get_model("envs", "Env")
    Vm = apps.get_model("vms", "Vm")
    Snapshot = apps.get_model("vms", "Snapshot")
    Operation = apps.get_model("envs", "Operation")
    Notification = apps.get_model("notifications", "Notification")
    Schedule = apps.get_model("django_q", "Schedule")
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")

    now = timezone.now()
    alice = User.objects.create(username="alice")
    vera = User.objects.create(username="vera", is_staff=True)
    operation_type, _ = ContentType.objects.get_or_create(app_label="envs", model="operation")
    view, _ = Permission.objects.get_or_create(
        content_type=operation_type, codename="view_operation", defaults={"name": "Can view operation"}
    )
    vera.user_permissions.add(view)
    node = Node.objects.create(name="n1", uri="test:///default")
    template = Template.objects.create(name="tt/old", path="old.qcow2", compatible_engines=["libvirt"])
    env = Env.objects.create(owner=alice, name="lab", start_at=now, end_at=now + timedelta(hours=1))
    vm = Vm.objects.create(env=env, node=node, template=template, name="web", status="stopped",
                           cpu_num=1, mem_mb=64, disk_mb=100, mac="52:54:00:00:00:01", ip="10.100.0.2")
    snapshot = Snapshot.objects.create(vm=vm, name="before", status="ready")
    created = Operation.objects.create(
        kind="env_create", status="succeeded", env=env, vm=vm, node=node, requested_by=alice,
        idempotency_key="k1", request_fingerprint="f" * 64, target="lab", params={"vm_ids": [vm.pk]},
        progress=100, log="12:00:00 done\n", attempt=1, worker="h:1/x#tt",
    )
    taken = Operation.objects.create(kind="snapshot_create", status="queued", env=env, vm=vm,
                                     snapshot=snapshot, node=node, requested_by=alice,
                                     target="lab/web@before")
    drift = Operation.objects.create(kind="node_drift", status="failed", env=None, target="n1: domain tt-x",
                                     error_code="drift", error_message="found", progress=100)
    failed = Operation.objects.create(kind="vm_start", status="failed", env=env, vm=vm, node=node,
                                      requested_by=alice, error_code="start_vm", error_message="no")
    notification = Notification.objects.create(key="op:1", kind="operation.failed", user=alice, env=env,
                                               operation=failed)
    # As the previous layout's migrations left them (a transactional test before this one
    # may have emptied the table).
    for name, func in PREVIOUS_SCHEDULES.items():
        Schedule.objects.update_or_create(name=name, defaults={
            "func": func, "schedule_type": "I", "minutes": 1, "repeats": -1,
            **({"args": "'n1'", "cluster": "n1"} if func.endswith("node_beat") else {}),
        })
    return {
        "alice": alice.pk, "vera": vera.pk, "node": node.pk, "env": env.pk, "vm": vm.pk,
        "snapshot": snapshot.pk, "notification": notification.pk,
        "ops": {op.pk: (op.kind, op.status, op.error_code) for op in (created, taken, drift, failed)},
        "created": created.pk, "taken": taken.pk, "drift": drift.pk,
        "schedules": set(Schedule.objects.values_list("name", flat=True)),
    }


def test_a_database_of_the_previous_layout_migrates_with_nothing_lost():
    try:
        world = _old_world(_migrate(PREVIOUS_LAYOUT))
    finally:
        _migrate(None)

    from django.contrib.auth.models import User
    from django_q.models import Schedule

    from notifications.models import Notification
    from operations.models import Operation

    assert Operation._meta.db_table == "envs_operation"
    ops = {op.pk: (op.kind, op.status, op.error_code) for op in Operation.objects.all()}
    assert ops == world["ops"]

    created = Operation.objects.get(pk=world["created"])
    assert (created.env_id, created.vm_id, created.node_id, created.requested_by_id) == (
        world["env"], world["vm"], world["node"], world["alice"])
    assert (created.idempotency_key, created.request_fingerprint, created.params) == (
        "k1", "f" * 64, {"vm_ids": [world["vm"]]})
    assert created.env.name == "lab" and created.node.name == "n1"
    assert created.get_kind_display() == "Create Env"
    assert Operation.objects.get(pk=world["taken"]).snapshot_id == world["snapshot"]
    assert Operation.objects.get(pk=world["drift"]).env_id is None
    assert Notification.objects.get(pk=world["notification"]).operation.kind == "vm_start"
    assert set(created.env.operations.values_list("pk", flat=True)) == set(world["ops"]) - {world["drift"]}

    # Whoever could view operations still can, under the permission's new name.
    assert User.objects.get(pk=world["vera"]).has_perm("operations.view_operation")

    # Every schedule is still there, and each names a task that can be imported.
    names = set(Schedule.objects.values_list("name", flat=True))
    assert names == world["schedules"] and names >= set(PREVIOUS_SCHEDULES)
    for schedule in Schedule.objects.all():
        assert callable(import_string(schedule.func)), schedule.func
    funcs = set(Schedule.objects.values_list("func", flat=True))
    assert "operations.tasks.recover_operations" in funcs
    assert "vms.tasks.node_beat" in funcs
    assert {f for f in funcs if f.startswith("envs.")} <= {"envs.tasks.expire_envs"}


def test_the_indexes_and_constraints_keep_their_names():
    with connection.cursor() as cursor:
        names = set(connection.introspection.get_constraints(cursor, "envs_operation"))
    assert {"operation_status_idx", "operation_idempotency_key_unique_per_user"} <= names


def test_rewriting_the_task_paths_twice_changes_nothing():
    from django.apps import apps
    from django_q.models import Schedule

    moved = importlib.import_module("operations.migrations.0002_moved_from_envs")
    before = sorted(Schedule.objects.values_list("name", "func"))
    moved.rename_tasks(apps, None)
    moved.move_content_type(apps, None)
    assert sorted(Schedule.objects.values_list("name", "func")) == before
