"""Exec latency: `true` run through the API (POST /api/vms/{id}/exec/) in a running Debian
VM, answered by its QEMU guest agent, and in a running container, answered by podman's
exec API; each call timed from the request to its answer, 50 of each after 3 to warm up.

    .venv/bin/python bench/exec_latency.py [--count 50] [--quick]

(--quick: 20 of each, for bench/all.py.) The requests go through the whole API stack
in-process (token auth, permission, the checks, the operation record, the engine), with
no HTTP socket, as the other API benchmarks do. Target: p95 ≤ 150 ms for both.

It ends with one line: `exec: agent p50 <ms> ms, p95 <ms> ms; container p50 <ms> ms, p95 <ms> ms`.
"""

from __future__ import annotations

import time

import _common as c
import _guests as g

TARGET_P95_MS = 150
WARM_UP = 3


def timed_execs(client, vm_id: int, count: int) -> list[float]:
    for _ in range(WARM_UP):
        g.exec_call(client, vm_id, ["true"])
    samples = []
    for _ in range(count):
        t = time.perf_counter()
        response = g.exec_call(client, vm_id, ["true"])
        samples.append(time.perf_counter() - t)
        body = response.json()
        if response.status_code != 200 or body["exit_code"] != 0:
            raise RuntimeError(f"exec true in VM {vm_id}: {response.status_code} {body}")
    return samples


def run(count: int) -> None:
    c.header(f"exec_latency: {count} execs of `true` through the API, guest agent vs container")
    with c.Cleanup() as cleanup:
        guests = g.prepare(cleanup)
        agent = timed_execs(guests.client, guests.debian_id, count)
        print("  " + c.summary("agent (Debian VM, qemu-ga)", agent))
        container = timed_execs(guests.client, guests.container_id, count)
        print("  " + c.summary("container (podman exec)", container))
    worst = max(c.p95(agent), c.p95(container)) * 1000
    verdict = "met" if worst < TARGET_P95_MS else "MISSED"
    print(f"  target p95 ≤ {TARGET_P95_MS} ms for both: {verdict}")
    print(f"exec: agent p50 {c.median(agent) * 1000:.1f} ms, p95 {c.p95(agent) * 1000:.1f} ms; "
          f"container p50 {c.median(container) * 1000:.1f} ms, p95 {c.p95(container) * 1000:.1f} ms")


def main() -> None:
    run(c.count_from_args(__doc__, "--count", default=50, quick=20, what="timed execs per guest"))


if __name__ == "__main__":
    main()
