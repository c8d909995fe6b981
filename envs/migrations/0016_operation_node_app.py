# Operation.node now names nodes.Node (moved from the `engines` label, same table):
# Django's state only, the database's column and constraint are unchanged.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("envs", "0015_disk_watch"),
        ("nodes", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="operation",
                    name="node",
                    field=models.ForeignKey(blank=True, help_text="The node whose task cluster runs it.", null=True,
                                            on_delete=django.db.models.deletion.SET_NULL,
                                            related_name="operations", to="nodes.node"),
                ),
            ],
            database_operations=[],
        ),
    ]
