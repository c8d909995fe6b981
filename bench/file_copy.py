"""File copy: 64 MiB up (PUT /api/vms/{id}/files/?path=…) and down (GET, streamed) through
the API, into and out of a running Debian VM (QEMU guest agent, in chunks of
`--write-kib` and `--read-kib`) and a running container (podman's archive API); the copy read back is
checked by its sha256.

    .venv/bin/python bench/file_copy.py [--mib 64] [--write-kib N] [--read-kib N] [--rounds 2] [--quick]

(--quick: 1 round, for bench/all.py.) The requests go through the whole API stack
in-process (token auth, checks, the operation record, the engine) with no HTTP socket;
the figure is the best round's, in MB/s (10^6 bytes a second).

It ends with one line: `files: agent up <MB/s>, down <MB/s>; container up <MB/s>, down <MB/s>`.
"""

from __future__ import annotations

import hashlib
import os
import time

import _common as c
import _guests as g

PATH = "/tmp/tt-bench-copy.bin"


def one_way_up(client, vm_id: int, payload: bytes) -> float:
    t = time.perf_counter()
    response = client.put(f"/api/vms/{vm_id}/files/?path={PATH}", data=payload,
                          content_type="application/octet-stream", HTTP_HOST="localhost")
    took = time.perf_counter() - t
    if response.status_code != 201:
        raise RuntimeError(f"PUT files in VM {vm_id}: {response.status_code} {response.content[:300]}")
    return took


def one_way_down(client, vm_id: int, digest: str) -> float:
    t = time.perf_counter()
    response = client.get(f"/api/vms/{vm_id}/files/?path={PATH}", HTTP_HOST="localhost")
    if response.status_code != 200:
        raise RuntimeError(f"GET files in VM {vm_id}: {response.status_code} {response.content[:300]}")
    h = hashlib.sha256()
    for chunk in response.streaming_content:
        h.update(chunk)
    took = time.perf_counter() - t
    if h.hexdigest() != digest:
        raise RuntimeError(f"VM {vm_id}: the file read back differs from the one written")
    return took


def rates(client, vm_id: int, payload: bytes, digest: str, rounds: int) -> tuple[float, float]:
    """The best round's MB/s up and down."""
    ups, downs = [], []
    for _ in range(rounds):
        ups.append(one_way_up(client, vm_id, payload))
        downs.append(one_way_down(client, vm_id, digest))
    g.exec_call(client, vm_id, ["rm", "-f", PATH])
    mb = len(payload) / 1e6
    return mb / min(ups), mb / min(downs)


def run(mib: int, rounds: int, write_kib: int | None, read_kib: int | None) -> None:
    c.header(f"file_copy: {mib} MiB up and down through the API, guest agent vs container")
    with c.Cleanup() as cleanup:
        guests = g.prepare(cleanup)
        from engines.libvirt import guest_agent

        if write_kib:
            guest_agent.WRITE_CHUNK = write_kib * 1024
        if read_kib:
            guest_agent.READ_CHUNK = read_kib * 1024
        print(f"  guest agent chunks: write {guest_agent.WRITE_CHUNK // 1024} KiB, "
              f"read {guest_agent.READ_CHUNK // 1024} KiB")
        payload = os.urandom(mib * c.MIB)
        digest = hashlib.sha256(payload).hexdigest()
        agent = rates(guests.client, guests.debian_id, payload, digest, rounds)
        print(f"  agent (Debian VM, qemu-ga): up {agent[0]:.1f} MB/s, down {agent[1]:.1f} MB/s")
        container = rates(guests.client, guests.container_id, payload, digest, rounds)
        print(f"  container (podman archive): up {container[0]:.1f} MB/s, down {container[1]:.1f} MB/s")
    print(f"files: agent up {agent[0]:.1f} MB/s, down {agent[1]:.1f} MB/s; "
          f"container up {container[0]:.1f} MB/s, down {container[1]:.1f} MB/s")


def main() -> None:
    parser = c.arg_parser(__doc__)
    parser.add_argument("--mib", type=int, default=64, help="the file's size, MiB (default 64)")
    parser.add_argument("--write-kib", type=int, default=None,
                        help="the guest agent's write chunk, KiB (default: guest_agent.WRITE_CHUNK, 128)")
    parser.add_argument("--read-kib", type=int, default=None,
                        help="the guest agent's read chunk, KiB (default: guest_agent.READ_CHUNK, 1024)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per guest (default 2)")
    parser.add_argument("--quick", action="store_true", help="1 round (bench/all.py)")
    args = parser.parse_args()
    args.rounds = (1 if args.quick else 2) if args.rounds is None else args.rounds
    if args.rounds < 1 or args.mib < 1:
        parser.error("--rounds and --mib must be at least 1")
    c.require_root()
    run(args.mib, args.rounds, args.write_kib, args.read_kib)


if __name__ == "__main__":
    main()
