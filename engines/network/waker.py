"""The waker: a node's TCP listener for the forwarded ports of sleeping Envs.

While an Env sleeps, the node's `wake_tcp` map leads its public TCP ports here (DNAT to
the node's gateway address, one port for all: engines/network/nftables.py). The kernel
still knows which public port the client dialed: SO_ORIGINAL_DST on the accepted socket.
For each connection the waker asks `wake(public_port, client_ip)` (blocking, in a thread:
it records and runs the Env's wake) where to go, holds the client meanwhile, dials the
guest's port until it answers, then copies bytes both ways until either side closes. A
refusal (`wake` returns None: the node is full, the port is no sleeper's) closes the
client's connection at once.

No Django here: `wake` is the caller's (envs/sleep.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
# How long the guest's port may take to answer once its VM runs again.
ANSWER_TIMEOUT = 60.0
# How often the guest's port is dialed while it does not answer yet.
DIAL_EVERY = 0.02
# Connections the waker holds or splices at once, all Envs of its node together: past it a
# new one is closed at once, so a client opening connections in a loop cannot take the
# worker's file descriptors (each held connection costs two).
MAX_CONNECTIONS = 256

# wake(public_port, client_ip) -> (guest ip, guest port), or None to refuse.
Wake = Callable[[int, str], "tuple[str, int] | None"]


def original_port(sock: socket.socket) -> int:
    """The public port the client dialed, before the DNAT that led it here."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, = struct.unpack_from("!H", raw, 2)
    return port


async def _dial(host: str, port: int, deadline: float):
    while True:
        try:
            return await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1.0)
        except (OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(DIAL_EVERY)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, ConnectionError):
        pass


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ConnectionError):
        await writer.wait_closed()


class Waker:
    def __init__(self, wake: Wake, max_connections: int = MAX_CONNECTIONS) -> None:
        self.wake = wake
        self.max_connections = max_connections
        self.held = 0
        self.servers: dict[tuple[str, int], asyncio.AbstractServer] = {}

    async def listen(self, host: str, port: int) -> None:
        """Serve (host, port); again after a restart (reuse_address: the old sockets' TIME_WAIT)."""
        if (host, port) in self.servers:
            return
        ipaddress.IPv4Address(host)
        self.servers[(host, port)] = await asyncio.start_server(
            self._serve, host, port, reuse_address=True, backlog=512)
        log.info("waker listening on %s:%s", host, port)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.held >= self.max_connections:
            log.warning("waker: %s connections held already; one more closed", self.held)
            await _close(client_w)
            return
        self.held += 1
        try:
            await self._hold(client_r, client_w)
        finally:
            self.held -= 1

    async def _hold(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        sock = client_w.get_extra_info("socket")
        client_ip = (client_w.get_extra_info("peername") or ("?",))[0]
        try:
            public = original_port(sock)
            target = await asyncio.get_running_loop().run_in_executor(None, self.wake, public, client_ip)
            if target is None:
                await _close(client_w)  # refused: the wake operation says why
                return
            guest_r, guest_w = await _dial(*target, time.monotonic() + ANSWER_TIMEOUT)
        except Exception:
            log.exception("waker: connection from %s not served", client_ip)
            await _close(client_w)
            return
        await asyncio.gather(_pipe(client_r, guest_w), _pipe(guest_r, client_w))
        await _close(guest_w)
        await _close(client_w)

    def close(self) -> None:
        for server in self.servers.values():
            server.close()
        self.servers.clear()
