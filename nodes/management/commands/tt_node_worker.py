"""`manage.py tt_node_worker NAME [tt_prepare_node's options]`: this host as node NAME of a
site of several hosts, running the node's own task cluster.

Prepares the node exactly as tt_prepare_node does (engine, network, pool, firewall,
templates), marks it as running its own cluster (its operations are routed to the
queue named after it), registers its heartbeat schedule (`cluster=NAME`), then
becomes that cluster: `tt_qcluster` with Q_CLUSTER_NAME=NAME, in this process.

Several hosts share one PostgreSQL (TT_DATABASE_URL) and one Redis (TT_REDIS_URL):
this command refuses to run without them. The web host migrates the database; a
node worker never does, and refuses a database that is not migrated.
"""

from __future__ import annotations

import os
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from nodes.management.commands import tt_prepare_node
from nodes.models import Node
from operations import registry

HEARTBEAT_SCHEDULE = "tt: heartbeat {}"


def require_shared_state() -> None:
    """A second host cannot share a SQLite file or the ORM broker's polling: PostgreSQL
    and Redis, as docs/guide/several-hosts.md says."""
    if connection.vendor == "sqlite":
        raise CommandError("a node worker shares the site's database: set TT_DATABASE_URL to its "
                           "PostgreSQL (postgres://user:password@host:5432/name)")
    if "redis" not in settings.Q_CLUSTER:
        raise CommandError("a node worker takes its tasks from the site's Redis broker: set "
                           "TT_REDIS_URL (redis://host:6379/0)")
    executor = MigrationExecutor(connection)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        raise CommandError("the site's database is not migrated to this version: run the web host's "
                           "`./tt.sh run` (or `manage.py migrate`) first")


def join(node: Node) -> None:
    """Route the node's operations to its own queue and give its cluster a heartbeat
    schedule of its own (beside the keepers' beats every TT_NODE_BEAT s)."""
    from django_q.models import Schedule

    Node.objects.filter(pk=node.pk).update(own_cluster=True)
    Schedule.objects.update_or_create(
        name=HEARTBEAT_SCHEDULE.format(node.name),
        # The beat is vms' task (it reports what placement counts free), registered by name.
        defaults={"func": registry.task_path(registry.NODE_BEAT), "args": repr(node.name),
                  "cluster": node.name, "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
    )


class Command(tt_prepare_node.Command):
    help = "Prepare this host as node NAME of a several-host site and run the node's task cluster."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--no-run", action="store_true",
                            help="prepare and register the node, but do not run its cluster")

    def handle(self, *args, **o):
        require_shared_state()
        super().handle(*args, **o)
        node = Node.objects.get(name=o["name"])
        join(node)
        self.stdout.write(f"node {node.name}: its operations go to the task queue {node.name!r}")
        if o["no_run"]:
            return
        self.stdout.flush()
        run_cluster(node.name)


def run_cluster(name: str) -> None:
    """Become `tt_qcluster` for queue `name`. django-q2 reads the cluster name once, when
    Django starts, so the cluster runs in a fresh interpreter (same pid) with it set."""
    if os.environ.get("Q_CLUSTER_NAME") == name:
        call_command("tt_qcluster")
        return
    env = {**os.environ, "Q_CLUSTER_NAME": name}
    manage = str(settings.BASE_DIR / "manage.py")
    os.execve(sys.executable, [sys.executable, manage, "tt_qcluster"], env)
