"""all: every benchmark with a target, in its quick mode, and one line per target (issue 24).

Runs each benchmark below as its own process with --quick (fewer rounds or requests than
its default: a check, not the figure to report), reads the line its docstring documents,
and prints for every target

    <benchmark>: <figure> (target <target>): ok|MISSED

then `all: <n> targets, <m> MISSED`. The time limits of the benchmarks without guests are
scaled by this machine's speed against the one the targets were set on (REFERENCE_S below;
never tightened), and the line says so: `(target <= 25 ms, x3.17 on this machine: 79.2 ms)`.
A benchmark that fails, or whose line is missing
from its output, counts as MISSED ("no result"). The exit status is 1 when anything
was MISSED, else 0. Each benchmark's whole output is kept in a log file (the last line
says where).

The benchmarks that need no real guest (only the PostgreSQL on 127.0.0.1:5432), under two
minutes together on a quiet machine:

- list_latency: p95 of each page at 10,000 VMs, on SQLite and PostgreSQL; queries constant;
- fleet: placement and list p95 at 100 nodes, queries constant (once per database);
- port_alloc: 32 ports on a full node against an empty one (once per database).

The others need root, a prepared host (`./tt.sh setup`) and a quiet machine (TCG guests
on 2 cores): nat_scale, clone_cost, env_ready (QEMU, docker and warm), resume,
crash_recovery, ssh_ready, exec_latency, cli_up. Left out, having no target: debian_guest,
docker_snapshot, request_path, file_copy.

    flock /tmp/tt-bench.lock .venv/bin/python bench/all.py [--no-guests] [--only NAME,...]
                                                         [--logs DIR]

--no-guests: only the benchmarks that need no real guest. --only: these benchmarks
(names as in the lines above, e.g. `list_latency,fleet`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the benchmarks' modules, for their targets


@dataclass(frozen=True)
class Target:
    figure: str  # what was measured, with its value
    target: str  # what it must be
    ok: bool


@dataclass(frozen=True)
class Bench:
    name: str  # what the lines start with
    script: str
    args: tuple[str, ...]
    guest: bool  # needs root and real guests or containers
    read: Callable[[str], list[Target]]  # its output -> its targets (empty: its line is missing)


def last(pattern: str, text: str) -> re.Match | None:
    """The last line of `text` that `pattern` matches from its start."""
    found = None
    for line in text.splitlines():
        found = re.match(pattern, line.strip()) or found
    return found


NUMBER = r"(-?[\d.]+|nan|inf)"


# --- the machine's speed -------------------------------------------------------------------
# The targets in milliseconds were set, and met, on the machine issue 24 was measured on.
# Machines of the same kind differ: on 2026-12-07's afternoon machine the code of that
# morning (af78be7) ran the list pages and placement 2.9 to 3.5 times slower than its own
# figures there, while a bare loop ran as fast: what differs is memory, objects made and
# freed, which the pages and placement are made of. This workload is that (small dicts
# built, then encoded as JSON): 0.71 s there, so REFERENCE_S, 3.1 times less, stands for
# the machine of the targets. The benchmarks that need no guest (the CI guard) scale their
# time limits by how much slower than that this machine runs the workload, never tightening
# them on a faster one: the guard catches a regression of ours, not a slower machine. The
# figures to report, and the real-guest targets, stay unscaled.
REFERENCE_S = 0.23
SPEED_ROUNDS = 5


def _workload() -> float:
    started = time.perf_counter()
    json.dumps([{"id": i, "name": str(i), "ports": [i, i + 1]} for i in range(200_000)])
    return time.perf_counter() - started


def speed_factor() -> tuple[float, float]:
    """(how much slower than the reference machine this one is, at least 1; the workload's
    median seconds here)."""
    seconds = sorted(_workload() for _ in range(SPEED_ROUNDS))[SPEED_ROUNDS // 2]
    return max(1.0, seconds / REFERENCE_S), seconds


SCALE = {"factor": 1.0}  # set by main() for the benchmarks without guests


def at_most(figure: str, value: str, limit: float, unit: str = "") -> Target:
    """`figure` with "{}" where the value goes (with its unit). A limit in time is scaled by
    the machine's speed factor (SCALE) where main() set one."""
    number = float(value)  # nan compares False: MISSED
    factor = SCALE["factor"] if unit in (" ms", " s") else 1.0
    scaled = limit * factor
    said = f"<= {limit:g}{unit}"
    if factor > 1:
        said += f", x{factor:.2f} on this machine: {scaled:.3g}{unit}"
    return Target(figure.format(f"{value}{unit}"), said, number <= scaled)


# --- each benchmark's documented line -------------------------------------------------------


def read_list_latency(text: str) -> list[Target]:
    """`list_latency <database> <what>: <figure> (target <target>): ok|MISSED`, one per target;
    a page's `p95 <ms> ms (target <ms> ms)` judged here (its limit scaled with the machine)."""
    targets = []
    for m in re.finditer(r"^list_latency (?P<what>.+?): (?P<figure>.+) \(target (?P<target>[^)]+)\): "
                         r"(?P<verdict>ok|MISSED)$", text, re.MULTILINE):
        page = re.fullmatch(rf"p95 {NUMBER} ms", m["figure"])
        limit = re.fullmatch(r"([\d.]+) ms", m["target"])
        if page and limit:
            targets.append(at_most(f"{m['what']}: p95 {{}}", page[1], float(limit[1]), " ms"))
        else:
            targets.append(Target(f"{m['what']}: {m['figure']}", m["target"], m["verdict"] == "ok"))
    return targets


def read_fleet(text: str) -> list[Target]:
    """`fleet: placement p95 <ms> ms at 100 nodes, list p95 <ms> ms, queries constant: yes|no`."""
    import fleet

    m = last(rf"fleet: placement p95 {NUMBER} ms at 100 nodes, list p95 {NUMBER} ms, "
             r"queries constant: (yes|no)", text)
    if not m:
        return []
    return [at_most("placement p95 {} at 100 nodes", m[1], fleet.PLACEMENT_TARGET_MS, " ms"),
            at_most("list p95 {} at 100 nodes", m[2], fleet.LIST_TARGET_MS, " ms"),
            Target(f"queries constant: {m[3]}", "yes", m[3] == "yes")]


def read_port_alloc(text: str) -> list[Target]:
    """`port_alloc: full <ms> ms, empty <ms> ms, ratio <x>` (medians)."""
    import port_alloc

    m = last(rf"port_alloc: full {NUMBER} ms, empty {NUMBER} ms, ratio {NUMBER}", text)
    if not m:
        return []
    return [at_most("full node: median {}", m[1], port_alloc.FULL_TARGET_MS, " ms"),
            at_most(f"ratio full/empty {{}} (empty {m[2]} ms)", m[3], port_alloc.RATIO_TARGET)]


def read_verdicts(text: str) -> list[Target]:
    """The lines _common.verdict (and env_ready.ok, with a unit) write:
    `<what> = <x>[ s]  (target <= <t>[ s]: met|MISSED)`."""
    return [Target(f"{m['what']} = {m['value']}{m['unit'] or ''}", f"<= {m['target']}{m['unit'] or ''}",
                   m["verdict"] == "met")
            for m in re.finditer(rf"^\s*(?P<what>[^=\n]+?) = (?P<value>{NUMBER})(?P<unit> s)?\s+"
                                 r"\(target <= (?P<target>[\d.]+)(?: s)?: (?P<verdict>met|MISSED)\)",
                                 text, re.MULTILINE)]


def read_ratio(text: str) -> list[Target]:
    """env_ready (QEMU or docker): its verdicts (QEMU: TT/libvirt with the same domain XML,
    TT/bare minimal guest, TT launched after; docker: TT/bare podman), or else its last line,
    `ratio <x>`."""
    import env_ready

    verdicts = read_verdicts(text)
    if verdicts:
        return verdicts
    m = last(rf"ratio {NUMBER}$", text)
    return [at_most("ratio TT/bare {} (medians)", m[1], env_ready.TARGET)] if m else []


def read_warm(text: str) -> list[Target]:
    """env_ready --warm: `warm: <s> s, cold: <s> s, ratio <x>` (a pool of paused spares)."""
    import _warm

    m = last(rf"warm: {NUMBER} s, cold: {NUMBER} s, ratio {NUMBER}", text)
    if not m:
        return []
    return [at_most("warm {} (paused spares)", m[1], _warm.TARGET_S, " s"),
            at_most(f"ratio warm/cold {{}} (cold {m[2]} s)", m[3], _warm.TARGET_RATIO)]


def read_resume(text: str) -> list[Target]:
    """`resume: <s> s, suspend: <s> s, cold start: <s> s, saved image <MB> MB`."""
    import resume

    m = last(rf"resume: {NUMBER} s, suspend: {NUMBER} s", text)
    return [at_most("resume until HTTP {}", m[1], resume.TARGET_S, " s")] if m else []


def read_wake(text: str) -> list[Target]:
    """`wake: first answer <s> s (saved), <s> s (paused), cold boot <s> s`."""
    import wake

    m = last(rf"wake: first answer {NUMBER} s \(saved\), {NUMBER} s \(paused\)", text)
    if not m:
        return []
    return [at_most("wake, saved: first answer {}", m[1], wake.TARGETS["saved"], " s"),
            at_most("wake, paused: first answer {}", m[2], wake.TARGETS["paused"], " s")]


def read_crash_recovery(text: str) -> list[Target]:
    """`crash_recovery: worst <s> s, median <s> s, stuck <n>, orphans <n>`."""
    import crash_recovery

    m = last(rf"crash_recovery: worst {NUMBER} s, median {NUMBER} s, stuck (\d+), orphans (\d+)", text)
    if not m:
        return []
    return [at_most("worst kill to end {}", m[1], crash_recovery.LIMIT_S, " s"),
            Target(f"stuck {m[3]}", "0", m[3] == "0"), Target(f"orphans {m[4]}", "0", m[4] == "0")]


def read_ssh_ready(text: str) -> list[Target]:
    """`ssh_ready: tt <s> s, bare <s> s, ratio <x>`."""
    import ssh_ready

    m = last(rf"ssh_ready: tt {NUMBER} s, bare {NUMBER} s, ratio {NUMBER}", text)
    return [at_most(f"ratio TT/bare {{}} (tt {m[1]} s, bare {m[2]} s)", m[3], ssh_ready.TARGET)] if m else []


def read_exec_latency(text: str) -> list[Target]:
    """`exec: agent p50 <ms> ms, p95 <ms> ms; container p50 <ms> ms, p95 <ms> ms`."""
    import exec_latency

    m = last(rf"exec: agent p50 {NUMBER} ms, p95 {NUMBER} ms; "
             rf"container p50 {NUMBER} ms, p95 {NUMBER} ms", text)
    if not m:
        return []
    return [at_most("exec p95 {} (guest agent)", m[2], exec_latency.TARGET_P95_MS, " ms"),
            at_most("exec p95 {} (container)", m[4], exec_latency.TARGET_P95_MS, " ms")]


def read_cli_up(text: str) -> list[Target]:
    """`cli_up: cli <s> s, api <s> s, overhead <ms> ms`."""
    import cli_up

    m = last(rf"cli_up: cli {NUMBER} s, api {NUMBER} s, overhead {NUMBER} ms", text)
    if not m:
        return []
    return [at_most(f"tt overhead {{}} (cli {m[1]} s, api {m[2]} s)", m[3], cli_up.TARGET_MS, " ms")]


BENCHES = [
    Bench("list_latency", "list_latency.py", ("--quick",), False, read_list_latency),
    Bench("fleet sqlite", "fleet.py", ("--quick", "--only", "sqlite"), False, read_fleet),
    Bench("fleet postgres", "fleet.py", ("--quick", "--only", "postgres"), False, read_fleet),
    Bench("port_alloc sqlite", "port_alloc.py", ("--quick", "--only", "sqlite"), False, read_port_alloc),
    Bench("port_alloc postgres", "port_alloc.py", ("--quick", "--only", "postgres"), False, read_port_alloc),
    Bench("nat_scale", "nat_scale.py", ("--quick",), True, read_verdicts),
    Bench("clone_cost", "clone_cost.py", ("--quick",), True, read_verdicts),
    Bench("env_ready", "env_ready.py", ("--quick",), True, read_ratio),
    Bench("env_ready docker", "env_ready.py", ("--quick", "--engine", "docker"), True, read_ratio),
    Bench("env_ready warm", "env_ready.py", ("--quick", "--warm"), True, read_warm),
    Bench("resume", "resume.py", ("--quick",), True, read_resume),
    Bench("wake", "wake.py", ("--quick",), True, read_wake),
    Bench("crash_recovery", "crash_recovery.py", ("--quick",), True, read_crash_recovery),
    Bench("ssh_ready", "ssh_ready.py", ("--quick",), True, read_ssh_ready),
    Bench("exec_latency", "exec_latency.py", ("--quick",), True, read_exec_latency),
    Bench("cli_up", "cli_up.py", ("--quick",), True, read_cli_up),
]


def run(bench: Bench, logs: Path) -> list[Target]:
    """Runs one benchmark, its output to its log; its targets, or one MISSED "no result"."""
    log = logs / f"{bench.name.replace(' ', '_')}.log"
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run([sys.executable, str(HERE / bench.script), *bench.args], stdout=out,
                              stderr=subprocess.STDOUT, cwd=HERE.parent, check=False)
    text = log.read_text(errors="replace")
    try:
        targets = bench.read(text)
    except (ValueError, ImportError) as exc:  # a figure that is no number, a module that moved
        targets = [Target(f"unreadable output ({exc})", "its documented line", False)]
    took = time.monotonic() - started
    if not targets:
        return [Target(f"no result (exit {done.returncode} after {took:.0f} s; see {log})",
                       "its documented line", False)]
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-guests", action="store_true",
                        help="only those needing no real guest (list_latency, fleet, port_alloc)")
    parser.add_argument("--only", help="these benchmarks only, comma-separated (e.g. list_latency,fleet)")
    parser.add_argument("--logs", type=Path,
                        help="where the benchmarks' output goes (default: a new temporary directory)")
    args = parser.parse_args()
    chosen = [bench for bench in BENCHES if not (args.no_guests and bench.guest)]
    if args.only:
        names = {name.strip() for name in args.only.split(",") if name.strip()}
        unknown = names - {bench.name.split()[0] for bench in BENCHES} - {bench.name for bench in BENCHES}
        if unknown:
            parser.error(f"--only: no benchmark named {', '.join(sorted(unknown))}")
        chosen = [bench for bench in chosen if bench.name in names or bench.name.split()[0] in names]
    if any(bench.guest for bench in chosen) and os.geteuid() != 0:
        parser.error("the benchmarks with real guests need root: run as root, or pass --no-guests")
    logs = args.logs or Path(tempfile.mkdtemp(prefix="tt-bench-all-"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f"all: {len(chosen)} benchmark runs in quick mode; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs", flush=True)
    factor = 1.0
    if any(not bench.guest for bench in chosen):
        factor, seconds = speed_factor()
        print(f"all: this machine's speed: the reference workload in {seconds:.3f} s against "
              f"{REFERENCE_S:g} s where the targets were set; the time limits of the benchmarks "
              f"without guests x{factor:.2f}", flush=True)
    started, missed, count = time.monotonic(), 0, 0
    for bench in chosen:
        SCALE["factor"] = factor if not bench.guest else 1.0
        for target in run(bench, logs):
            count += 1
            missed += not target.ok
            verdict = "ok" if target.ok else "MISSED"
            print(f"{bench.name}: {target.figure} (target {target.target}): {verdict}", flush=True)
    print(f"all: {count} targets, {missed} MISSED (took {time.monotonic() - started:.0f} s; load average "
          f"{os.getloadavg()[0]:.1f}; logs in {logs})")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
