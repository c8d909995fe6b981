"""`manage.py tt_qcluster`: django-q2's cluster, stopping cleanly.

The same cluster as `manage.py qcluster` (same options; `--cluster-name NODE` runs a
node's own cluster, on its queue), except how it stops. On SIGTERM or Ctrl-C every
worker is told the cluster is stopping (operations/worker.py): the operation in hand
gets TT_WORKER_STOP_TIMEOUT seconds to finish and is then handed back to be taken
over at once, and no new one is started. An idle cluster is gone within a second or two.

Why not django-q2's own stop (docs/guide/production.md#stopping): a terminal's Ctrl-C,
systemd and `kill -- -PGID` signal every process of the cluster at once, and
`./tt.sh run` adds its own SIGTERM to Ctrl-C. django-q2 stops the cluster inside the
signal handler (multiprocessing's Event.set, then a join): a second signal re-enters
it while the first holds the Event's lock, and the cluster process waits for ever.
And its sentinel, workers, pusher and monitor die of SIGTERM, the sentinel while it
waits on that Event, which then never completes either. Here the signal handler only
notes the request, the stop runs once, from the main flow, and only the cluster
process acts on SIGTERM and SIGINT: the processes under it stop when it tells them.
"""

from __future__ import annotations

import os
import signal
import sys

import django_q.cluster
from django.conf import settings
from django_q.cluster import Cluster, Sentinel
from django_q.conf import Conf
from django_q.management.commands import qcluster

from operations import worker


class StoppingSentinel(Sentinel):
    """django-q2's sentinel, with the signals left to the cluster process."""

    def start(self):
        # Inherited by the workers, the pusher and the monitor it forks next. django-q2
        # already ignores SIGINT here; SIGTERM too, so a signal to the whole group kills
        # neither the sentinel (the cluster process would wait on it for ever) nor a
        # worker in the middle of an operation.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        super().start()

    def reincarnate(self, process):
        # A worker past its task's time limit: django-q2 ends it with SIGTERM, which it
        # now ignores. SIGKILL it instead (its operation's holder is then known gone, and
        # the recovery pass takes it over at once).
        if process in self.pool and process.timer.value == 0 and process.is_alive():
            process.kill()
        super().reincarnate(process)


class StoppingCluster(Cluster):
    stop_asked = False

    def sig_handler(self, signum, frame):
        # Only note it (however many signals come): `serve` stops the cluster, once.
        worker.request_stop(settings.TT_WORKER_STOP_TIMEOUT)
        self.stop_asked = True

    def serve(self) -> None:
        """Start the cluster, run it until a signal asks it to stop or its sentinel dies,
        then stop it."""
        self.start()
        # After the sentinel's fork (this process forks no more): a child never inherits
        # the services' threads, listening sockets or database connections.
        worker.start_cluster_services()
        while not self.stop_asked and self.sentinel.is_alive():
            self.sentinel.join(timeout=0.2)
        self.stop()


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
        # Cluster.start() names its sentinel's class through the module.
        django_q.cluster.Sentinel = StoppingSentinel
        cluster = StoppingCluster()
        if options.get("run_once"):
            cluster.start()
            cluster.stop()
        else:
            cluster.serve()
