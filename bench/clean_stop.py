"""clean_stop: how long `./tt.sh serve` (how `./tt.sh run` ends: the web server and the
task cluster) takes to stop, idle and with an operation in hand (issue 24).

Each stop is timed from the signal until tt.sh has exited and no process of its
process group is left, three ways (tests/clean_stop/portal.py): SIGTERM to tt.sh alone,
Ctrl-C (SIGINT to the whole group, as a terminal sends it), and SIGTERM to the whole
group (`kill -- -PGID`, or systemd's default KillMode). Each figure is the worst of the
three.

- idle: a portal that is ready (web answers /healthz, every worker started) and has
  nothing to do. Target: 5 s.
- busy: the same with one operation in hand that blocks far longer than
  TT_WORKER_STOP_TIMEOUT (--timeout, default 5), the test-only kind `test_block`
  (tests/clean_stop/apps.py): the worst case, where the operation must be handed
  back. Target: timeout + 5 s, and each operation ends handed back (lease released,
  task sent again) or finished, never held by a worker that is gone.

A stop not over within --limit seconds (120) is printed as `>120` and its processes
are killed. No root and no engine: a throwaway SQLite database (TT_VAR_DIR in a
temporary folder, migrated at start), the ORM broker, uvicorn on a free port.

    .venv/bin/python bench/clean_stop.py [--timeout 5] [--limit 120]

    clean_stop: idle <s> s, busy <s> s (timeout <t> s)  idle ok|MISSED, busy ok|MISSED
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from _common import arg_parser

IDLE_TARGET = 5.0
SLACK = 5.0  # busy target: the timeout plus this


def shown(seconds: float | None, limit: float) -> str:
    return f">{limit:.0f}" if seconds is None else f"{seconds:.1f}"


def worst(times: list[float | None]) -> float | None:
    return None if None in times else max(times)


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--timeout", type=int, default=5, help="TT_WORKER_STOP_TIMEOUT for the busy stops")
    parser.add_argument("--limit", type=float, default=120, help="seconds before a stop counts as hung")
    args = parser.parse_args()

    var_dir = Path(tempfile.mkdtemp(prefix="tt-bench-clean-stop-"))
    os.environ.update(TT_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="tests.clean_stop.settings")
    os.environ.pop("TT_DATABASE_URL", None)  # the throwaway SQLite file in TT_VAR_DIR
    os.environ.pop("TT_REDIS_URL", None)  # and the ORM broker, as ./tt.sh run's defaults
    os.environ["TT_LOG_LEVEL"] = "WARNING"  # this process's own; each portal logs at INFO
    import django

    django.setup()
    from django.core.management import call_command
    from django_q.models import OrmQ

    from operations.models import Operation
    from tests.clean_stop.apps import dispatch_block, handed_back
    from tests.clean_stop.portal import STOPS, Portal

    call_command("migrate", verbosity=0)
    try:
        idle, busy, ends = [], [], []
        for how in STOPS:
            portal = Portal(var_dir / f"idle-{how}.log")
            portal.start()
            try:
                portal.wait_ready()
                idle.append(portal.stop(how, limit=args.limit))
            finally:
                portal.close()
            print(f"  idle, {how}: {shown(idle[-1], args.limit)} s")
        for how in STOPS:
            OrmQ.objects.all().delete()
            Operation.objects.all().delete()
            portal = Portal(var_dir / f"busy-{how}.log", TT_WORKER_STOP_TIMEOUT=str(args.timeout))
            portal.start()
            try:
                portal.wait_ready()
                op = dispatch_block(args.timeout + args.limit + 60)
                deadline = time.monotonic() + 60
                while Operation.objects.get(pk=op.pk).status != "running":
                    if time.monotonic() > deadline:
                        raise SystemExit(f"no worker took the operation:\n{portal.log()}")
                    time.sleep(0.05)
                busy.append(portal.stop(how, limit=args.limit))
            finally:
                portal.close()
            op.refresh_from_db()
            end = "handed back" if handed_back(op) else op.status if op.is_done else f"stuck ({op.worker})"
            ends.append(end)
            print(f"  busy, {how}: {shown(busy[-1], args.limit)} s, the operation {end}")

        idle_s, busy_s = worst(idle), worst(busy)
        idle_ok = idle_s is not None and idle_s <= IDLE_TARGET
        busy_ok = (busy_s is not None and busy_s <= args.timeout + SLACK
                   and all(end in ("handed back", "succeeded") for end in ends))
        print(f"clean_stop: idle {shown(idle_s, args.limit)} s, busy {shown(busy_s, args.limit)} s "
              f"(timeout {args.timeout} s)  idle {'ok' if idle_ok else 'MISSED'}, "
              f"busy {'ok' if busy_ok else 'MISSED'}")
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
