"""A clean stop of the portal (issue 24): `./tt.sh serve`, the web server and the task
cluster exactly as `./tt.sh run` ends, started for real and stopped the ways a terminal,
a person or a service manager stops it (tests/clean_stop/portal.py).

Idle, it is gone within 5 s, leaving no process behind. With an operation in hand it is
gone within TT_WORKER_STOP_TIMEOUT + 5 s, and the operation has either finished or been
handed back (its lease released, its task sent again), so the next cluster takes it at
once: never left held by a worker that is gone. The operation is the test-only kind
`test_block` (tests/clean_stop/apps.py), which sleeps as an engine call does.

No root: the portal runs on this test's database (SQLite or PostgreSQL) with uvicorn
on a free port; no node, no engine.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
import uuid
from types import SimpleNamespace

import pytest

from operations.management.commands.tt_qcluster import StoppingSentinel
from operations.models import Operation
from tests.clean_stop.apps import dispatch_block, handed_back
from tests.clean_stop.portal import STOPS, Portal
from tests.integration.cluster import database_url

IDLE_BOUND = 5.0
SLACK = 5.0  # with an operation in hand: TT_WORKER_STOP_TIMEOUT + this


@pytest.fixture
def portal(transactional_db, settings, tmp_path):
    """Make a `./tt.sh serve` on this test's database (started by the test); whatever is
    left of any of them is killed at the end."""
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}  # tasks go to the broker
    made: list[Portal] = []

    def make(**env: str) -> Portal:
        made.append(Portal(tmp_path / f"portal-{len(made)}.log", TT_DATABASE_URL=database_url(), **env))
        made[-1].start()
        made[-1].wait_ready()
        return made[-1]

    yield make
    for each in made:
        each.close()


def stopped(portal: Portal, how: str, bound: float) -> float:
    """Stop it `how`; the seconds it took, failing past `bound` with what was left."""
    took = portal.stop(how, limit=bound + 30)
    assert took is not None, f"still running {bound + 30} s after {how}: {portal.left()}\n{portal.log()}"
    assert took <= bound, f"{how}: stopped in {took:.1f} s, more than {bound} s\n{portal.log()}"
    assert portal.proc.returncode == 0
    return took


def in_hand(op: Operation) -> Operation:
    """Wait until a worker runs `op`."""
    deadline = time.monotonic() + 60
    while op.status != "running":
        assert time.monotonic() < deadline, f"no worker took operation {op.pk}"
        time.sleep(0.05)
        op.refresh_from_db()
    return op


@pytest.mark.parametrize("how", list(STOPS))
def test_an_idle_portal_is_gone_within_5_s(portal, how):
    stopped(portal(), how, IDLE_BOUND)


def test_the_production_server_is_gone_within_5_s_too(portal):
    # ./tt.sh run --production: gunicorn and its workers instead of uvicorn alone.
    production = portal(TT_DEBUG="0", TT_SECRET_KEY="clean-stop-" + "x" * 50, TT_WEB_WORKERS="2")
    assert "gunicorn" in production.log()
    stopped(production, "int-group", IDLE_BOUND)


def test_the_operation_in_hand_finishes_when_it_can(portal):
    # SIGTERM to every process at once (systemd's default): the worker used to die of it
    # mid-operation; now the operation runs on to its end, and the stop waits only for that.
    timeout = 20
    running = portal(TT_WORKER_STOP_TIMEOUT=str(timeout))
    op = in_hand(dispatch_block(3))
    took = stopped(running, "term-group", timeout + SLACK)
    op.refresh_from_db()
    assert (op.status, op.attempt) == ("succeeded", 1), op.log
    assert took < timeout  # it did not wait the whole timeout


def test_an_operation_that_outlasts_the_timeout_is_handed_back_and_taken_over(portal):
    timeout = 2
    running = portal(TT_WORKER_STOP_TIMEOUT=str(timeout))
    op = in_hand(dispatch_block(600))
    stopped(running, "int-group", timeout + SLACK)  # Ctrl-C in the terminal
    op.refresh_from_db()
    assert handed_back(op) and op.attempt == 1, (op.status, op.worker, op.heartbeat_at, op.log)

    # The next cluster takes it at once, not once its lease (TT_OPERATION_LEASE) has run out.
    Operation.objects.filter(pk=op.pk).update(params={"seconds": 0})
    portal()
    ready_at = time.monotonic()
    while not op.is_done:
        assert time.monotonic() - ready_at < 15, f"not taken over: {op.status}, attempt {op.attempt}"
        time.sleep(0.05)
        op.refresh_from_db()
    assert (op.status, op.attempt) == ("succeeded", 2), op.log


def _ignore_sigterm_and_wait(ready) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as every process under the cluster does
    ready.set()
    time.sleep(120)


def test_a_worker_past_its_time_limit_is_killed_though_it_ignores_sigterm(monkeypatch):
    """The sentinel replaces a worker whose task overran TT_TASK_TIMEOUT (stuck where its
    own alarm cannot reach it). django-q2 ends it with SIGTERM, which it ignores now."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        # Not started: no guard loop, no processes, no broker (its __init__ sets this
        # process's signals).
        sentinel = StoppingSentinel(multiprocessing.Event(), multiprocessing.Event(), uuid.uuid4(),
                                    broker=SimpleNamespace(), start=False)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    spawned = []
    monkeypatch.setattr(sentinel, "spawn_worker", lambda: spawned.append(True))
    fork = multiprocessing.get_context("fork")
    ready = fork.Event()
    stuck = fork.Process(target=_ignore_sigterm_and_wait, args=(ready,), daemon=True)
    stuck.timer = fork.Value("f", 0)  # the guard's count-down reached 0: past its time limit
    stuck.start()
    try:
        assert ready.wait(30)
        sentinel.pool.append(stuck)
        sentinel.reincarnate(stuck)
        stuck.join(10)
        assert stuck.exitcode == -signal.SIGKILL
        assert spawned == [True] and stuck not in sentinel.pool  # and replaced
    finally:
        if stuck.is_alive():
            stuck.kill()
