"""The waker (engines/network/waker.py) on the loopback: the connection is held until the
guest's port answers, then spliced both ways; a refusal closes it. The DNAT and
SO_ORIGINAL_DST are the real node's (tests/integration/test_sleep.py): here the dialed
port is given."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from engines.network import waker as waker_module
from engines.network.waker import Waker


@pytest.fixture
def dialed(monkeypatch):
    monkeypatch.setattr(waker_module, "original_port", lambda sock: 30080)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def echo_upper(reader, writer):
    data = await reader.read(100)
    writer.write(b"HELLO " + data.upper())
    await writer.drain()
    writer.close()


def test_a_connection_is_held_until_the_guest_answers_then_spliced(dialed):
    guest_port, waker_port = free_port(), free_port()
    asked = []

    async def main():
        loop = asyncio.get_running_loop()
        started = loop.time()

        def wake(port, client):
            asked.append((port, client))
            return ("127.0.0.1", guest_port)

        w = Waker(wake)
        await w.listen("127.0.0.1", waker_port)

        async def guest_later():
            await asyncio.sleep(0.3)  # the guest's port answers only once it is restored
            return await asyncio.start_server(echo_upper, "127.0.0.1", guest_port)

        guest = asyncio.create_task(guest_later())
        reader, writer = await asyncio.open_connection("127.0.0.1", waker_port)
        writer.write(b"ping")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        took = loop.time() - started
        writer.close()
        (await guest).close()
        w.close()
        return answer, took

    answer, took = asyncio.run(main())
    assert answer == b"HELLO PING"
    assert took >= 0.3
    assert asked == [(30080, "127.0.0.1")]


def test_a_refused_connection_is_closed_at_once(dialed):
    waker_port = free_port()

    async def main():
        w = Waker(lambda port, client: None)
        await w.listen("127.0.0.1", waker_port)
        reader, _writer = await asyncio.open_connection("127.0.0.1", waker_port)
        t = time.monotonic()
        data = await asyncio.wait_for(reader.read(), timeout=5)
        w.close()
        return data, time.monotonic() - t

    data, took = asyncio.run(main())
    assert data == b"" and took < 2


def test_past_its_cap_a_new_connection_is_closed_and_the_held_ones_stay(dialed):
    waker_port = free_port()
    release = None

    async def main():
        nonlocal release
        release = asyncio.Event()
        loop = asyncio.get_running_loop()

        def wake(port, client):  # an Env still waking: the connection is held meanwhile
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=10)
            return None

        w = Waker(wake, max_connections=2)
        await w.listen("127.0.0.1", waker_port)
        held = [await asyncio.open_connection("127.0.0.1", waker_port) for _ in range(2)]
        while w.held < 2:
            await asyncio.sleep(0.01)
        reader, _writer = await asyncio.open_connection("127.0.0.1", waker_port)
        past_cap = await asyncio.wait_for(reader.read(), timeout=5)
        still_held = w.held
        release.set()
        answers = [await asyncio.wait_for(r.read(), timeout=5) for r, _ in held]
        while w.held:
            await asyncio.sleep(0.01)
        w.close()
        return past_cap, still_held, answers

    past_cap, still_held, answers = asyncio.run(main())
    assert past_cap == b"" and still_held == 2
    assert answers == [b"", b""]  # refused once their wake said so
