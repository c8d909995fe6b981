"""Where the cold create of an Env of 3 VMs spends its time, from the API's service call to
the last domain start returning (issue 24).

On the same throwaway node, database and template as env_ready (tasks inline), each round
runs `env_create` (3 busybox VMs, 128 MiB, port 80) under cProfile (the operation's own
thread: the engine's worker threads show as its waits) and times every libvirt call and
every subprocess (nft) in every thread. It prints the operation's log, the profile's top
entries by cumulative and by own time, a timeline of the calls that took 2 ms or more
(start and duration in ms from the service call, thread, call) and their totals. The Env
is destroyed after each round; the first round warms the caches, so read the last.

    .venv/bin/python bench/cold_profile.py [--rounds 2]
"""

from __future__ import annotations

import cProfile
import functools
import io
import pstats
import subprocess
import threading
import time
from collections import defaultdict

import _common as c
from env_ready import MEM_MB, VMS, prepare_node

EVENTS: list[tuple[float, float, str, str]] = []  # (start, duration, thread, call)
CLOCK = {"t0": 0.0}


def timed(func, label: str):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        started = time.monotonic()
        try:
            return func(*args, **kwargs)
        finally:
            EVENTS.append((started - CLOCK["t0"], time.monotonic() - started,
                           threading.current_thread().name, label))

    return wrapper


def time_calls(cleanup: c.Cleanup) -> None:
    """Every public method of libvirt's objects, and subprocess.run (nft), timed. Undone on exit."""
    import libvirt

    for cls in (libvirt.virConnect, libvirt.virDomain, libvirt.virNetwork, libvirt.virStoragePool,
                libvirt.virStorageVol):
        for name, func in list(vars(cls).items()):
            if not name.startswith("_") and callable(func):
                cleanup.add(f"untime {cls.__name__}.{name}", setattr, cls, name, func)
                setattr(cls, name, timed(func, f"{cls.__name__}.{name}"))
    run = subprocess.run
    cleanup.add("untime subprocess.run", setattr, subprocess, "run", run)

    def timed_run(cmd, *args, **kwargs):
        label = "subprocess " + " ".join(cmd[:3]) if isinstance(cmd, list | tuple) else str(cmd)
        return timed(run, label)(cmd, *args, **kwargs)

    subprocess.run = timed_run


def one_round(rnd: int, template, user) -> None:
    from envs.models import Env
    from envs.services import env_create, env_destroy
    from vms.new_vms import NewVm

    specs = [NewVm(name=f"vm{i}", template=template.name, mem_mb=MEM_MB, ports=[80]) for i in range(VMS)]
    EVENTS.clear()
    profile = cProfile.Profile()
    CLOCK["t0"] = time.monotonic()
    profile.enable()
    op = env_create(owner=user, by=user, name=f"profile-{rnd}", vms=specs)
    profile.disable()
    took = time.monotonic() - CLOCK["t0"]
    op.refresh_from_db()
    print(f"== round {rnd}: env_create returned after {took:.3f} s (the task inline), {op.status}")
    print(op.log)
    for order, limit in (("cumulative", 40), ("tottime", 15)):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(order).print_stats(limit)
        print(out.getvalue())
    print("-- calls of 2 ms or more: start (ms), duration (ms), thread, call")
    for start, duration, thread, label in sorted(EVENTS):
        if duration >= 0.002:
            print(f"  {start * 1000:8.1f} {duration * 1000:7.1f}  {thread[:10]:10} {label}")
    totals: dict[str, list] = defaultdict(lambda: [0, 0.0])
    for _start, duration, _thread, label in EVENTS:
        totals[label][0] += 1
        totals[label][1] += duration
    print("-- totals")
    for label, (count, total) in sorted(totals.items(), key=lambda item: -item[1][1])[:20]:
        print(f"  {total * 1000:8.1f} ms  {count:4d}x  {label}")
    done = env_destroy(env=Env.objects.get(pk=op.env_id), by=user)
    done.refresh_from_db()
    if done.status != "succeeded":
        raise RuntimeError(f"env_destroy {done.status}: {done.error_message}")


def main() -> None:
    parser = c.arg_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    c.require_root()
    c.header(f"cold_profile: env_create of {VMS} busybox VMs, profiled")
    with c.Cleanup() as cleanup:
        c.throwaway_site(cleanup, client=False)
        cleanup.add("bench node", c.remove_node)
        _node, template, user = prepare_node()
        time_calls(cleanup)
        for rnd in range(1, args.rounds + 1):
            one_round(rnd, template, user)


if __name__ == "__main__":
    main()
