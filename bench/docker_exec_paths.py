"""Exec through the docker engine, both ways: `true` run in a container by `runc exec`
directly and through podman's exec API (engines/docker/runc_exec.py, guest_exec.py), timed
around the engine's `exec` call, 50 of each after 3 to warm up, the two interleaved so a
change of load falls on both.

    .venv/bin/python bench/docker_exec_paths.py [--count 50]

A throwaway container (no network, `sleep` as its process) from the local busybox image
(nothing is pulled), removed at the end. Needs root and podman's socket. Ends with one line:
`docker exec: runc p50 <ms> ms, p95 <ms> ms; api p50 <ms> ms, p95 <ms> ms`.
"""

from __future__ import annotations

import contextlib
import os
import time

import _common as c  # puts the project on sys.path
import _docker as d

from engines.docker.engine import DockerEngine
from engines.guest_io import ExecRequest
from engines.node_options import NodeOptions

NAME = f"{d.CONTAINER_PREFIX}exec-paths"
WARM_UP = 3


class Container:
    name = NAME


def busybox_image(client) -> str:
    for image in client.images.list():
        for tag in image.tags:
            if "tt/busybox" in tag:
                return tag
    raise SystemExit("no local tt/busybox image: run the integration tests or ./tt.sh run once")


def timed(engine: DockerEngine) -> float:
    started = time.perf_counter()
    result = engine.exec(Container, ExecRequest(argv=("true",)))
    took = time.perf_counter() - started
    if result.exit_code != 0:
        raise RuntimeError(f"true exited {result.exit_code}: {result.stderr!r}")
    return took


def run(count: int) -> None:
    c.header(f"docker_exec_paths: {count} execs of `true` through the engine, runc directly vs podman's API")
    print(os.popen("uptime").read().strip())
    client = d.client()
    with contextlib.suppress(Exception):
        client.containers.get(NAME).remove(force=True)
    image = busybox_image(client)
    client.containers.run(image, ["sleep", "100000"], name=NAME, detach=True, network_mode="none")
    try:
        engines = {path: DockerEngine(uri=d.SOCKET_URI, options=NodeOptions(node_name=NAME, docker_exec=path))
                   for path in ("runc", "api")}
        samples: dict[str, list[float]] = {path: [] for path in engines}
        for _ in range(WARM_UP):
            for engine in engines.values():
                timed(engine)
        for _ in range(count):
            for path, engine in engines.items():
                samples[path].append(timed(engine))
        for path, values in samples.items():
            print(c.summary(path, values))
        print(os.popen("uptime").read().strip())
        runc, api = samples["runc"], samples["api"]
        print(f"docker exec: runc p50 {c.median(runc) * 1000:.0f} ms, p95 {c.p95(runc) * 1000:.0f} ms; "
              f"api p50 {c.median(api) * 1000:.0f} ms, p95 {c.p95(api) * 1000:.0f} ms")
    finally:
        with contextlib.suppress(Exception):
            client.containers.get(NAME).remove(force=True)


if __name__ == "__main__":
    parser = c.arg_parser(__doc__)
    parser.add_argument("--count", type=int, default=50)
    args = parser.parse_args()
    c.require_root()
    run(args.count)
