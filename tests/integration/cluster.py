"""A real task cluster (`manage.py tt_qcluster`) on the test database, to kill and restart.

It runs in its own process group, as `./tt.sh run` starts it, so a kill takes
the cluster process, its sentinel, workers, pusher and monitor at once, the way
a crash, an OOM kill or a careless redeploy does.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

from operations.models import Operation

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The URL of the database this test process uses (the test database)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    user = db["USER"] or "postgres"
    auth = f"{user}:{db['PASSWORD']}" if db["PASSWORD"] else user
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Cluster:
    """`manage.py tt_qcluster` (the site's cluster), or another command that becomes a
    cluster (`tt_node_worker NAME ...`: a node's own)."""

    def __init__(self, log_path: Path, command: tuple[str, ...] = ("tt_qcluster",), **env: str):
        self.log_path = log_path
        self.command = command
        self.env = {**os.environ, "TT_DATABASE_URL": database_url(), "TT_Q_WORKERS": "2", **env}
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_path, "a")  # noqa: SIM115 (the child writes it; closed with the child)
        log.write(f"\n===== start {self.starts} at {time.time():.3f}\n")
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", *self.command], cwd=ROOT, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()

    def runs(self, pid: int) -> bool:
        """Whether process `pid` is part of this cluster (its process group)."""
        try:
            return self.proc is not None and os.getpgid(pid) == self.proc.pid
        except ProcessLookupError:
            return False

    def kill(self) -> float:
        """SIGKILL to the whole process group; returns when it happened (time.time())."""
        assert self.proc is not None
        at = time.time()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reap_group()
        return at

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM to the cluster process (a clean stop); its exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._reap_group()
        return code

    def _reap_group(self) -> None:
        # Children that outlive the cluster process are part of the kill too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until_done(op: Operation, deadline: float) -> Operation:
    """Poll the operation until it ends; fail at `deadline` (time.time())."""
    while True:
        op.refresh_from_db()
        if op.is_done:
            return op
        if time.time() > deadline:
            raise AssertionError(
                f"operation {op.pk} ({op.kind}) still {op.status} (attempt {op.attempt}, "
                f"worker {op.worker!r}, heartbeat {op.heartbeat_at}); log:\n{op.log}"
            )
        time.sleep(0.1)


def kill_during(cluster: Cluster, op: Operation, rng: random.Random) -> float | None:
    """Kill the cluster once `op` runs and has reached a random point of its progress,
    and start it again. Returns when it was killed, or None if `op` ended first."""
    target = rng.randint(0, 90)

    def reached() -> bool:
        op.refresh_from_db()
        return op.is_done or (op.status == "running" and op.progress >= target)

    wait_for(reached, time.time() + 120, f"operation {op.pk} to reach {target} %")
    if op.is_done:
        return None
    killed_at = cluster.kill()
    cluster.start()
    return killed_at


def wait_for(predicate, deadline: float, what: str) -> None:
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
