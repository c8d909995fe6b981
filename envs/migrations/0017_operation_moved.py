"""Operation now belongs to operations (operations 0001): envs forgets the model, the table
stays (it is operations.Operation's, db_table envs_operation)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("envs", "0016_operation_node_app"),
        ("operations", "0001_initial"),
        ("notifications", "0003_operation_moved"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="Operation")]),
    ]
