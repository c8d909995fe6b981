# The nodes' foreign keys now name nodes.Node (moved from the `engines` label, same
# table): Django's state only, the database's columns and constraints are unchanged.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("nodes", "0001_initial"),
        ("vms", "0009_live_vm_index_disk"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="portmapping",
                    name="node",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT,
                                            related_name="port_mappings", to="nodes.node"),
                ),
                migrations.AlterField(
                    model_name="vm",
                    name="node",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="vms",
                                            to="nodes.node"),
                ),
                migrations.AlterField(
                    model_name="warmpool",
                    name="node",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT,
                                            related_name="warm_pools", to="nodes.node"),
                ),
            ],
            database_operations=[],
        ),
    ]
