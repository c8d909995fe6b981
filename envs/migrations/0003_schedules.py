"""Create the periodic sweeps once; re-running migrations never duplicates them."""

from django.db import migrations

SCHEDULES = [
    ("tt: expire envs", "envs.tasks.expire_envs"),
    ("tt: expire snapshots", "envs.tasks.expire_snapshots"),
]


def create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, func in SCHEDULES:
        Schedule.objects.update_or_create(
            name=name, defaults={"func": func, "schedule_type": "I", "minutes": 1, "repeats": -1}
        )


def remove(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.filter(name__in=[name for name, _ in SCHEDULES]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("envs", "0002_initial"),
        ("django_q", "0018_task_success_index"),
    ]
    operations = [migrations.RunPython(create, remove)]
