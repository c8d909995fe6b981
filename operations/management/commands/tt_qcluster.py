"""`manage.py tt_qcluster`: django-q2's cluster, stopping cleanly.

The same cluster as `manage.py qcluster` (same options; `--cluster-name NODE` runs a
node's own cluster, on its queue), except that SIGTERM
or Ctrl-C first tells every worker the cluster is stopping (operations/worker.py):
the operation in hand gets TT_WORKER_STOP_TIMEOUT seconds to finish and is
then handed back to be taken over at once, and no new one is started.
"""

from __future__ import annotations

import os
import sys

from django.conf import settings
from django_q.cluster import Cluster
from django_q.conf import Conf
from django_q.management.commands import qcluster

from operations import worker


class StoppingCluster(Cluster):
    def sig_handler(self, signum, frame):
        worker.request_stop(settings.TT_WORKER_STOP_TIMEOUT)
        super().sig_handler(signum, frame)


class Command(qcluster.Command):
    help = "Start the task cluster (django-q2) with a clean stop on SIGTERM or Ctrl-C."

    def handle(self, *args, **options):
        name = options.get("cluster_name")
        if name and name != Conf.CLUSTER_NAME:
            # django-q2 reads the cluster name once, as Django starts (Q_CLUSTER_NAME): too
            # late to set it here. Start again, same pid, with it set.
            env = {**os.environ, "Q_CLUSTER_NAME": name}
            os.execve(sys.executable, [sys.executable, str(settings.BASE_DIR / "manage.py"), "tt_qcluster"],
                      env)
        worker.prepare_stop_flag()
        cluster = StoppingCluster()
        cluster.start()
        if options.get("run_once"):
            cluster.stop()
