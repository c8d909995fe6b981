"""One libvirt connection per process and URI, reopened when it has closed, and driver
calls that survive a restart of the daemon."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable

import libvirt

log = logging.getLogger(__name__)

# libvirt prints every error to stderr by default; we raise them as exceptions instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_connections: dict[str, libvirt.virConnect] = {}
_lock = threading.Lock()


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def get_connection(uri: str) -> libvirt.virConnect:
    with _lock:
        conn = _connections.get(uri)
        if conn is None or not _alive(conn):
            conn = libvirt.open(uri)
            _connections[uri] = conn
        return conn


def is_missing(exc: libvirt.libvirtError) -> bool:
    """True when libvirt says the object simply does not exist."""
    return exc.get_error_code() in {
        libvirt.VIR_ERR_NO_DOMAIN,
        libvirt.VIR_ERR_NO_STORAGE_VOL,
        libvirt.VIR_ERR_NO_STORAGE_POOL,
        libvirt.VIR_ERR_NO_NETWORK,
        libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
    }


def connection_lost(uri: str) -> bool:
    """True when this process had a connection to `uri` and it has died (the daemon
    restarted, or went away)."""
    with _lock:
        conn = _connections.get(uri)
    return conn is not None and not _alive(conn)


def wait_for_daemon(uri: str, timeout: float) -> None:
    """Reopen the connection to `uri` as soon as its daemon answers again; raise the last
    error after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            get_connection(uri).getLibVersion()
            return
        except libvirt.libvirtError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def reconnecting(method: Callable) -> Callable:
    """Run a driver call again, once, when the connection died under it and the daemon
    comes back within the engine's `reconnect_timeout`. The calls are idempotent (an
    existing image or domain is reused, a running VM is not started twice), so running
    one again finishes what the lost one began."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except libvirt.libvirtError:
            if not connection_lost(self.uri):
                raise
            log.warning("lost the connection to %s during %s; waiting for the daemon",
                        self.uri, method.__name__)
            wait_for_daemon(self.uri, self.reconnect_timeout)
            self.after_reconnect()
            return method(self, *args, **kwargs)

    return wrapper
