"""Wake on the first connection: one sleeping busybox VM, the time from a client's TCP
connect to its full HTTP answer through the node's NAT and waker (envs/sleep.py).

An Env of 1 busybox VM (128 MiB, port 80 forwarded) on the benchmarks' throwaway node,
database and client namespace (tasks inline); the node's waker runs in this process, as
in a task cluster's main process. Each round puts the Env to sleep with `env_sleep` (the
idle check's own call; the minute of idleness is not what is measured), then a client in
the client namespace connects to the forwarded port and sends `GET /`; the clock runs in
the client, from the connect call until the answer's last byte, which must be the VM's
page. Three ways the VM can sleep:

- saved: libvirt's managed save (what sleeping does);
- paused: vCPUs stopped, memory kept (the engine's pause_vm in place of the save);
- cold boot: stopped (forced off in place of the save): the wake boots it.

Prints each round, then `wake: first answer <s> s (saved), <s> s (paused), cold boot <s> s`
(medians). Targets: saved <= 1.0 s, paused <= 0.3 s.

    .venv/bin/python bench/wake.py [--rounds 3] [--quick]
"""

from __future__ import annotations

import subprocess
import sys
import time

import _common as c
from env_ready import prepare_node

MEM_MB = 128
TARGETS = {"saved": 1.0, "paused": 0.3}
DEADLINE_S = 300

# Run in the client namespace: connect, GET, read to the end; print the seconds from the
# connect call to the last byte, then the page.
_CLIENT = r"""
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
t0 = time.monotonic()
s = socket.create_connection((host, port), timeout=120)
s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
print(f"{time.monotonic() - t0:.4f}")
sys.stdout.write(data.decode(errors="replace"))
"""


def first_answer(port: int, expect: str) -> float:
    out = subprocess.run(["ip", "netns", "exec", c.NETNS, sys.executable, "-c", _CLIENT, c.NODE_ADDR,
                          str(port)], capture_output=True, text=True, timeout=DEADLINE_S)
    if out.returncode != 0:
        raise RuntimeError(f"the client failed: {out.stderr.strip()}")
    took, _, page = out.stdout.partition("\n")
    if expect not in page:
        raise RuntimeError(f"the first answer is not the VM's page: {page[:300]!r}")
    return float(took)


def put_to_sleep(env, how: str) -> None:
    """env_sleep, its engine save replaced by a pause or a forced stop for those rounds."""
    from engines.libvirt.engine import LibvirtEngine
    from envs import sleep

    raw = LibvirtEngine.suspend_vm
    if how == "paused":
        LibvirtEngine.suspend_vm = lambda self, vm: self.pause_vm(vm)
    elif how == "cold":
        LibvirtEngine.suspend_vm = lambda self, vm: self.stop_vm(vm, force=True)
    try:
        op = sleep.env_sleep(env.pk)
        if op is None:
            raise RuntimeError("the Env could not sleep")
        op.refresh_from_db()
        if op.status != "succeeded":
            raise RuntimeError(f"env_sleep {op.status}: {op.error_code}: {op.error_message}\n{op.log}")
    finally:
        LibvirtEngine.suspend_vm = raw


def run(rounds: int) -> None:
    c.header(f"wake: one sleeping busybox VM ({MEM_MB} MiB), from a client's TCP connect to its "
             "full HTTP answer through NAT and the node's waker")
    with c.Cleanup() as cleanup:
        c.throwaway_site(cleanup)
        cleanup.add("bench node", c.remove_node)
        _node, template, user = prepare_node()
        from django.conf import settings

        from envs import sleep
        from envs.models import Env
        from envs.services import env_create
        from operations.models import Operation
        from vms.new_vms import NewVm

        settings.TT_IDLE_CHECK_SECONDS = 3600  # the bench sleeps the Env itself
        sleep.start("bench")
        op = env_create(owner=user, by=user, name="bench-wake", idle_suspend=60,
                        vms=[NewVm(name="vm", template=template.name, mem_mb=MEM_MB, ports=[80])])
        op.refresh_from_db()
        if op.status != "succeeded":
            raise RuntimeError(f"env_create {op.status}: {op.error_message}\n{op.log}")
        env = Env.objects.get(pk=op.env_id)
        vm = env.vms.get()
        port = vm.port_mappings.get(inner_port=80).public_port
        expect = f"ip {vm.ip}<"
        waiter = c.HttpWaiter(netns=c.NETNS)
        boot = waiter.wait({"vm": (f"http://{c.NODE_ADDR}:{port}/", expect)}, time.monotonic(),
                           deadline=DEADLINE_S, interval=0.05)["vm"]
        print(f"  booted: {vm.engine_name} answers through NAT after {boot:.2f} s")
        results: dict[str, list[float]] = {"saved": [], "paused": [], "cold": []}
        for rnd in range(1, rounds + 1):
            for how in results:
                put_to_sleep(env, how)
                env.refresh_from_db()
                took = first_answer(port, expect)
                wake = Operation.objects.filter(env=env, kind="env_wake").latest("pk")
                results[how].append(took)
                env.refresh_from_db()
                if env.asleep_since is not None:
                    raise RuntimeError("answered, but the Env is still asleep")
                print(f"  round {rnd} {how:6}: first answer {took:5.2f} s"
                      + f" (its wake operation ran {(wake.finished_at - wake.started_at).total_seconds():.2f}"
                      " s)")
                # Later connections go straight to the VM.
                again = first_answer(port, expect)
                print(f"           second request {again:5.3f} s")
    saved, paused, cold = (c.median(results[k]) for k in ("saved", "paused", "cold"))
    for how, target in TARGETS.items():
        got = c.median(results[how])
        print(f"  {how}: median {got:.2f} s (target <= {target} s: {'met' if got <= target else 'MISSED'})")
    print(f"wake: first answer {saved:.2f} s (saved), {paused:.2f} s (paused), cold boot {cold:.2f} s")


def main() -> None:
    run(c.count_from_args(__doc__, "--rounds", default=3, quick=1, what="rounds of each kind"))


if __name__ == "__main__":
    main()
