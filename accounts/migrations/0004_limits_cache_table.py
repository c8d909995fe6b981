"""The database cache table the rate limits count in (ttportal/ratelimit.py, settings.CACHES
"limits"), made by `migrate` so no deployment step can be forgotten. Django's own command
makes it (and skips a table that exists; with Redis configured there is none to make)."""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_quotas"),
    ]

    operations = [
        migrations.RunPython(create_cache_table, migrations.RunPython.noop),
    ]
