# Node and NodeHeartbeat are `nodes`' now (nodes 0001): the `engines` label lets go of
# them in Django's state only. The tables stay, with every row, under their old names.
# After every foreign key to them was pointed at nodes.Node, or the state would hold
# references to a model that is gone.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("engines", "0005_node_disk"),
        ("nodes", "0001_initial"),
        ("vms", "0010_node_app"),
        ("envs", "0016_operation_node_app"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="NodeHeartbeat"),
                migrations.DeleteModel(name="Node"),
            ],
            database_operations=[],
        ),
    ]
