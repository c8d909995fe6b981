"""A QEMU guest's serial console, live: libvirt's console stream (virDomainOpenConsole).

libvirt's client reads a stream's data off its socket only while a call waits on that
connection, or from an event loop: a non-blocking stream without one never sees its data,
and a blocking `recv` holds the connection's lock, so a keystroke sent meanwhile would wait
for the guest's next output. So, like `virsh console`: libvirt's default event loop runs in
a thread of its own (registered once per process, on the first console opened), each
console has a connection of its own opened after it (the per-thread connections of
engines/libvirt/connection.py are shared by the driver's calls), and its non-blocking
stream's data is queued by the loop's callback for `read`.

libvirt allows one console stream per domain: a second open is refused ("Active console
session exists"), unless forced, which would cut the first off. We never force: the
portal shares one stream among the watchers of a VM (vms/console.py).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time

import libvirt

from engines.errors import EngineError, ErrorCode
from engines.guest_io import ConsoleClosed, ConsoleStream

log = logging.getLogger(__name__)

# How much one callback reads at a time, and how long a write waits for a full stream.
CHUNK = 64 * 1024
WRITE_TIMEOUT = 5.0

_loop_lock = threading.Lock()
_loop_started = False


def ensure_event_loop() -> None:
    """libvirt's default event loop, running in a daemon thread (once per process).

    Connections opened after it have their socket watched by it (stream callbacks,
    keepalive answers); the ones opened before are untouched."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except libvirt.libvirtError:  # one bad callback must not end every console
                    log.exception("libvirt event loop")
                    time.sleep(0.1)

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


class LibvirtConsole(ConsoleStream):
    """The console of domain `name` at `uri`, open until `close` or the domain's end."""

    def __init__(self, uri: str, name: str):
        ensure_event_loop()
        self._chunks: queue.Queue[bytes] = queue.Queue()
        self._ended = threading.Event()
        self._closed = False
        self._lock = threading.Lock()
        try:
            self._conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise EngineError(f"cannot reach libvirt at {uri}: {exc}", code=ErrorCode.GUEST_CONSOLE) from exc
        try:
            domain = self._conn.lookupByName(name)
            self._stream = self._conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            domain.openConsole(None, self._stream, 0)
            self._stream.eventAddCallback(
                libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
                | libvirt.VIR_STREAM_EVENT_HANGUP, self._on_event, None)
        except libvirt.libvirtError as exc:
            self._conn.close()
            message = str(exc)
            if "Active console session" in message:
                message = (f"the console of {name} is open elsewhere (libvirt allows one console "
                           f"session per VM): {message}")
            raise EngineError(f"cannot open the console of {name}: {message}",
                              code=ErrorCode.GUEST_CONSOLE) from exc

    def _on_event(self, stream: libvirt.virStream, events: int, _opaque) -> None:
        """In the event loop's thread: queue whatever the stream has, note its end."""
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while True:
                try:
                    data = stream.recv(CHUNK)
                except libvirt.libvirtError:
                    self._end()
                    return
                if data == -2:  # nothing more for now
                    break
                if not data:  # end of stream: the guest stopped, or another forced it
                    self._end()
                    return
                self._chunks.put(data)
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self._end()

    def _end(self) -> None:
        if not self._ended.is_set():
            self._ended.set()
            self._chunks.put(b"")  # wakes a read waiting

    def read(self, timeout: float) -> bytes:
        try:
            first = self._chunks.get(timeout=timeout)
        except queue.Empty:
            if self._ended.is_set():
                raise ConsoleClosed("the console ended") from None
            return b""
        parts = [first]
        while True:
            try:
                parts.append(self._chunks.get_nowait())
            except queue.Empty:
                break
        data = b"".join(parts)
        if not data and self._ended.is_set():
            raise ConsoleClosed("the console ended (the VM stopped?)")
        return data

    def write(self, data: bytes) -> None:
        deadline = time.monotonic() + WRITE_TIMEOUT
        view = memoryview(data)
        while view:
            if self._ended.is_set() or self._closed:
                raise ConsoleClosed("the console ended")
            try:
                sent = self._stream.send(view.tobytes())
            except libvirt.libvirtError as exc:
                self._end()
                raise ConsoleClosed(f"the console ended: {exc}") from exc
            if sent == -2:  # the stream is full for now
                if time.monotonic() > deadline:
                    raise ConsoleClosed("the console takes no input (stream full)")
                time.sleep(0.01)
                continue
            view = view[sent:]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._end()
        for step in (self._stream.eventRemoveCallback, self._stream.abort, self._conn.close):
            with contextlib.suppress(libvirt.libvirtError):  # gone with its domain or connection
                step()
