"""The reconcile sweep, every five minutes (created once; re-running never duplicates it)."""

from django.db import migrations

NAME = "tt: reconcile nodes"


def create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=NAME,
        defaults={"func": "envs.tasks.reconcile_nodes", "schedule_type": "I", "minutes": 5, "repeats": -1},
    )


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("envs", "0004_operation_kinds")]
    operations = [migrations.RunPython(create, remove)]
