"""Cloning an Env of 3 VMs whose disks are 1 GiB, and 8 GiB: the clone's cost must not grow with the disk.

For each size, a source Env of 3 busybox VMs (128 MiB, port 80 forwarded, disk_mb 1024 or
8192) is made and answers HTTP first, untimed. Then each round clones it
(envs.cloning.env_clone, its operation inline as TT_Q_SYNC runs it): each source VM's disk
is cut (an external snapshot; the busybox guest has no agent, so crash-consistent) and the
3 clones are created on it and booted. Timed: from the env_clone call until it returned
(every disk cut, every clone defined and started), and until each clone answered HTTP with
its own address through its forwarded port, from the client namespace. The clone is then
destroyed, untimed; the sizes alternate which goes first. A cold Env of the same 3 VMs
(env_create until HTTP answers, as bench/env_ready.py times it) is the reference.

Everything runs on the throwaway node "bench" (bench/_common.py), removed on exit.

    .venv/bin/python bench/clone_env.py [--rounds 3] [--quick]

It ends with `clone_env: 1G <s> s, 8G <s> s, ratio <x>` (the medians of the clone call,
target ratio <= 1.2) and `clone_env: until HTTP <s> s, cold Env <s> s, ratio <x>` (target
<= 1.2).
"""

from __future__ import annotations

import re
import time

import _common as c
from env_ready import DEADLINE_S, MEM_MB, VMS, prepare_node, tt_round

SIZES_MB = {"1G": 1024, "8G": 8192}
TARGET = 1.2
CUT = re.compile(r"disk cut \(in ([0-9.]+) s")


def make_source(template, user, label: str, disk_mb: int):
    from envs.models import Env
    from envs.services import env_create
    from vms.new_vms import NewVm

    specs = [NewVm(name=f"vm{i}", template=template.name, mem_mb=MEM_MB, disk_mb=disk_mb, ports=[80])
             for i in range(VMS)]
    t0 = time.monotonic()
    op = env_create(owner=user, by=user, name=f"src-{label.lower()}", vms=specs)
    op.refresh_from_db()
    if op.status != "succeeded":
        raise RuntimeError(f"env_create {op.status}: {op.error_code}: {op.error_message}\n{op.log}")
    env = Env.objects.get(pk=op.env_id)
    wait_http(env, t0)
    return env


def wait_http(env, t0: float) -> dict[str, float]:
    waiter = c.HttpWaiter(netns=c.NETNS)
    targets = {}
    for vm in env.vms.live().order_by("name"):
        port = vm.port_mappings.get(inner_port=80, protocol="tcp").public_port
        targets[vm.name] = (f"http://{c.NODE_ADDR}:{port}/", f"ip {vm.ip}<")
    return waiter.wait(targets, t0, deadline=DEADLINE_S)


def clone_round(source, user, rnd: int) -> tuple[float, float, float]:
    """Seconds until env_clone returned, until every clone answered HTTP, and that the cuts of
    the source's disks took (the operation's log says each)."""
    from envs.cloning import env_clone
    from envs.models import Env
    from envs.services import env_destroy

    t0 = time.monotonic()
    op = env_clone(env=source, by=user, name=f"{source.name}-r{rnd}")
    returned = time.monotonic() - t0
    op.refresh_from_db()
    if op.status != "succeeded":
        raise RuntimeError(f"env_clone {op.status}: {op.error_code}: {op.error_message}\n{op.log}")
    clone = Env.objects.get(pk=op.params["envs"][0])
    answered = max(wait_http(clone, t0).values())
    cut = sum(float(m) for m in CUT.findall(op.log))  # each VM's, as the operation's log says
    done = env_destroy(env=clone, by=user)
    done.refresh_from_db()
    if done.status != "succeeded":
        raise RuntimeError(f"env_destroy {done.status}: {done.error_message}")
    return returned, answered, cut


def run(rounds: int) -> None:
    c.header(f"clone_env: clone of an Env of {VMS} busybox VMs ({MEM_MB} MiB) with 1 GiB and 8 GiB disks")
    calls: dict[str, list[float]] = {label: [] for label in SIZES_MB}
    https: dict[str, list[float]] = {label: [] for label in SIZES_MB}
    cuts: dict[str, list[float]] = {label: [] for label in SIZES_MB}
    colds: list[float] = []
    with c.Cleanup() as cleanup:
        c.throwaway_site(cleanup)
        cleanup.add("bench node", c.remove_node)
        _node, template, user = prepare_node()
        sources = {label: make_source(template, user, label, mb) for label, mb in SIZES_MB.items()}
        for rnd in range(1, rounds + 1):
            order = list(SIZES_MB) if rnd % 2 else list(reversed(SIZES_MB))
            for label in order:
                returned, answered, cut = clone_round(sources[label], user, rnd)
                calls[label].append(returned)
                https[label].append(answered)
                cuts[label].append(cut)
                print(f"  round {rnd} {label}: clone returned {returned:.2f} s (the {VMS} cuts {cut:.3f} s), "
                      f"HTTP {answered:.2f} s")
            cold = tt_round(100 + rnd, template, user)["total"]
            colds.append(cold)
            print(f"  round {rnd} cold Env until HTTP: {cold:.2f} s")
    one, eight = c.median(calls["1G"]), c.median(calls["8G"])
    ratio = eight / one
    http = c.median(https["1G"] + https["8G"])
    cold = c.median(colds)
    cut1, cut8 = c.median(cuts["1G"]), c.median(cuts["8G"])
    print(f"  the {VMS} disks' cuts: 1G {cut1:.3f} s, 8G {cut8:.3f} s, ratio {cut8 / cut1:.2f}")
    print(f"  {c.verdict('8G/1G clone call', ratio, TARGET)}")
    print(f"  {c.verdict('clone until HTTP / cold Env', http / cold, TARGET)}")
    print(f"clone_env: 1G {one:.2f} s, 8G {eight:.2f} s, ratio {ratio:.2f}")
    print(f"clone_env: until HTTP {http:.2f} s, cold Env {cold:.2f} s, ratio {http / cold:.2f}")


def main() -> None:
    run(c.count_from_args(__doc__, "--rounds", default=3, quick=2, what="clones per size"))


if __name__ == "__main__":
    main()
