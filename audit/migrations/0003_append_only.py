"""The database refuses to update an audit event (SQLite and PostgreSQL triggers), whatever
code asks: the rows are append-only. Deleting stays possible, for the retention prune."""

from django.db import migrations

SQLITE = ["""CREATE TRIGGER audit_event_append_only BEFORE UPDATE ON audit_auditevent
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;"""]
SQLITE_UNDO = ["DROP TRIGGER IF EXISTS audit_event_append_only;"]
POSTGRESQL = [
    """CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'audit events are append-only'; END $$ LANGUAGE plpgsql;""",
    """CREATE TRIGGER audit_event_append_only BEFORE UPDATE ON audit_auditevent
FOR EACH ROW EXECUTE FUNCTION audit_event_append_only();""",
]
POSTGRESQL_UNDO = ["DROP TRIGGER IF EXISTS audit_event_append_only ON audit_auditevent;",
                   "DROP FUNCTION IF EXISTS audit_event_append_only();"]


def _run(statements):
    def run(apps, schema_editor):
        for sql in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)
    return run


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_prune_schedule")]
    operations = [migrations.RunPython(_run({"sqlite": SQLITE, "postgresql": POSTGRESQL}),
                                       _run({"sqlite": SQLITE_UNDO, "postgresql": POSTGRESQL_UNDO}))]
