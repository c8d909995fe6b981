"""Cloning an Env (issue 27): the disk bases clones sit on, and each VM's base and source.

SQLite rebuilds vms_vm to add a column that references another table, and its rebuild
breaks the node-usage triggers (0011) that read vms_vm: they are dropped first and made
again after (which counts every node's use afresh). PostgreSQL adds the columns in place.
"""

import importlib

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

usage = importlib.import_module("vms.migrations.0011_node_usage")


def _on_sqlite(step):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "sqlite":
            step(apps, schema_editor)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("nodes", "0001_initial"),
        ("vms", "0012_guest_access"),
    ]

    operations = [
        migrations.RunPython(_on_sqlite(usage.drop_triggers), _on_sqlite(usage.create_triggers)),
        migrations.AddField(
            model_name="vm",
            name="clone_of",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="clones",
                to="vms.vm",
            ),
        ),
        migrations.CreateModel(
            name="DiskBase",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("path", models.CharField(max_length=500)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                (
                    "node",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="disk_bases",
                        to="nodes.node",
                    ),
                ),
                (
                    "parent",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="children",
                        to="vms.diskbase",
                    ),
                ),
                (
                    "source_vm",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="vms.vm",
                    ),
                ),
            ],
        ),
        migrations.AddField(
            model_name="vm",
            name="disk_base",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="vms",
                to="vms.diskbase",
            ),
        ),
        migrations.AddConstraint(
            model_name="diskbase",
            constraint=models.UniqueConstraint(fields=("node", "path"), name="disk_base_unique_path"),
        ),
        migrations.RunPython(_on_sqlite(usage.create_triggers), _on_sqlite(usage.drop_triggers)),
    ]
