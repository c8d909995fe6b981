"""`manage.py tt_qcluster`: django-q2's cluster, stopping cleanly.

The same cluster as `manage.py qcluster` (same options), except that SIGTERM
or Ctrl-C first tells every worker the cluster is stopping (envs/worker.py):
the operation in hand gets TT_WORKER_STOP_TIMEOUT seconds to finish and is
then handed back to be taken over at once, and no new one is started.
"""

from __future__ import annotations

import os

from django.conf import settings
from django_q.cluster import Cluster
from django_q.management.commands import qcluster

from envs import worker


class StoppingCluster(Cluster):
    def sig_handler(self, signum, frame):
        worker.request_stop(settings.TT_WORKER_STOP_TIMEOUT)
        super().sig_handler(signum, frame)


class Command(qcluster.Command):
    help = "Start the task cluster (django-q2) with a clean stop on SIGTERM or Ctrl-C."

    def handle(self, *args, **options):
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        worker.prepare_stop_flag()
        cluster = StoppingCluster()
        cluster.start()
        if options.get("run_once"):
            cluster.stop()
