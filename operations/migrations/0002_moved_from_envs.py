"""What the move of the operation framework out of envs leaves in the data, put right:

- the schedules (and per-node heartbeat schedules) made by earlier migrations name task
  paths in envs.tasks, which now live in the app that owns the work;
- the permissions on operations were envs.view_operation / envs.change_operation: their
  content type moves to operations, so whoever held them holds operations.* now.

Both are idempotent: a second run finds nothing to change.
"""

from django.db import migrations

# The task paths of today's main -> where the tasks live now. envs.tasks.expire_envs stays.
MOVED_TASKS = {
    "envs.tasks.run_operation": "operations.tasks.run_operation",
    "envs.tasks.recover_operations": "operations.tasks.recover_operations",
    "envs.tasks.expire_snapshots": "vms.tasks.expire_snapshots",
    "envs.tasks.reconcile_nodes": "vms.tasks.reconcile_nodes",
    "envs.tasks.warm_tend": "vms.tasks.warm_tend",
    "envs.tasks.warm_tend_all": "vms.tasks.warm_tend_all",
    "envs.tasks.disk_watch": "vms.tasks.disk_watch",
    "envs.tasks.fleet_sweep": "vms.tasks.fleet_sweep",
    "envs.tasks.node_beat": "vms.tasks.node_beat",
}


def _rename(apps, mapping: dict[str, str]) -> None:
    Schedule = apps.get_model("django_q", "Schedule")
    for old, new in mapping.items():
        Schedule.objects.filter(func=old).update(func=new)


def rename_tasks(apps, schema_editor):
    _rename(apps, MOVED_TASKS)


def rename_tasks_back(apps, schema_editor):
    _rename(apps, {new: old for old, new in MOVED_TASKS.items()})


def _move_content_type(apps, old_label: str, new_label: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    old = ContentType.objects.filter(app_label=old_label, model="operation").first()
    if old is None:
        return
    new = ContentType.objects.filter(app_label=new_label, model="operation").first()
    if new is None:
        old.app_label = new_label
        old.save(update_fields=["app_label"])
        return
    # Both exist (a migrate run made the new one): who held the old permissions gets the
    # new ones, then the old type goes with its permissions.
    for perm in Permission.objects.filter(content_type=old):
        twin = Permission.objects.filter(content_type=new, codename=perm.codename).first()
        if twin is None:
            perm.content_type = new
            perm.save(update_fields=["content_type"])
            continue
        for group in perm.group_set.all():
            group.permissions.add(twin)
        for user in perm.user_set.all():
            user.user_permissions.add(twin)
    old.delete()


def move_content_type(apps, schema_editor):
    _move_content_type(apps, "envs", "operations")


def move_content_type_back(apps, schema_editor):
    _move_content_type(apps, "operations", "envs")


class Migration(migrations.Migration):

    dependencies = [
        ("operations", "0001_initial"),
        ("envs", "0017_operation_moved"),
        ("vms", "0010_node_app"),
        ("notifications", "0002_schedule"),
        ("django_q", "0018_task_success_index"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(rename_tasks, rename_tasks_back),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
