"""Taking the test database back to older migrations and forward again, for the tests that
fill a database as an older layout made it and check what migrating it keeps."""

from __future__ import annotations

from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate(targets):
    """Migrate to `targets` ((app, migration or None) pairs); the models as they were there,
    with auth and contenttypes as they are now."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    executor.loader.build_graph()
    state_at = [t for t in targets if t[1] is not None]
    state_at += [leaf for leaf in executor.loader.graph.leaf_nodes() if leaf[0] in ("auth", "contenttypes")]
    return executor.loader.project_state(state_at).apps


def latest():
    """Every app's last migration."""
    return MigrationExecutor(connection).loader.graph.leaf_nodes()
