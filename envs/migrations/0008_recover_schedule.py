"""The recovery pass once a minute as a schedule too: each worker also runs it every
lease / 3 seconds (envs/worker.py); this one keeps going if a keeper thread does not.
Created once; re-running never duplicates it."""

from django.db import migrations

NAME = "tt: recover operations"


def create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=NAME,
        defaults={"func": "envs.tasks.recover_operations", "schedule_type": "I", "minutes": 1,
                  "repeats": -1},
    )


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("envs", "0007_operation_leases")]
    operations = [migrations.RunPython(create, remove)]
