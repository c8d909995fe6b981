"""One libvirt connection per thread and URI, reopened when it has closed, and driver
calls that survive a restart of the daemon."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable

import libvirt

from engines.retry import retry

log = logging.getLogger(__name__)

# libvirt prints every error to stderr by default; we raise them as exceptions instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

# One connection per thread and URI, opened on first use (well under 2 ms here) and closed
# with its thread (threading.local). libvirt's client does multiplex the calls of several
# threads on one connection, but the daemon may answer them only after a domain start in
# progress on that connection has ended: a lookup or state of another domain waited 0.1-0.3
# s, the rest of that start, where on a connection of its own it took under 1 ms. So VMs
# started side by side (vms/together.py) would start one after another again.
_local = threading.local()
# libvirt's test driver keeps its state in the connection when it is opened from a file
# (`test:///path/node.xml`; only `test:///default` shares one state per process): one
# connection per process for those, or each thread would see a world of its own.
_shared: dict[str, libvirt.virConnect] = {}
_shared_lock = threading.Lock()


def _mine() -> dict[str, libvirt.virConnect]:
    """This thread's connections, by URI."""
    if not hasattr(_local, "connections"):
        _local.connections = {}
    return _local.connections


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def get_connection(uri: str) -> libvirt.virConnect:
    """This thread's connection to `uri`, (re)opened when it has none or it has closed."""
    if uri.startswith("test://") and uri != "test:///default":
        with _shared_lock:
            if uri not in _shared:
                _shared[uri] = libvirt.open(uri)
            return _shared[uri]
    connections = _mine()
    conn = connections.get(uri)
    if conn is None or not _alive(conn):
        conn = libvirt.open(uri)
        connections[uri] = conn
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
    """True when this thread had a connection to `uri` and it has died (the daemon
    restarted, or went away)."""
    conn = _mine().get(uri)
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


# libvirt's errors of the connection itself (its RPC layer), not of the call: "Cannot recv
# data: Connection reset by peer", "Cannot write data: Broken pipe", "End of file while
# reading data". The same codes from another domain (a file the daemon cannot read, say)
# are the call's own, and are not retried.
TRANSIENT_CODES = frozenset({libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC})
# Attempts of one driver call in all (the first, and the retries), and the wait between
# them while the connection itself is still up.
ATTEMPTS = 3
RETRY_DELAY_S = 0.5


def transient(exc: BaseException, uri: str) -> bool:
    """A libvirt failure that the same call may not meet again: the connection to `uri`
    died under it, or libvirt's RPC layer said the connection was reset or broke."""
    if not isinstance(exc, libvirt.libvirtError):
        return False
    if connection_lost(uri):
        return True
    return exc.get_error_domain() == libvirt.VIR_FROM_RPC and exc.get_error_code() in TRANSIENT_CODES


def reconnecting(method: Callable) -> Callable:
    """Run a driver call again (ATTEMPTS in all) when it failed transiently: the
    connection died under it and the daemon comes back within the engine's
    `reconnect_timeout`, or libvirt's RPC layer reset it. The calls are idempotent (an
    existing image or domain is reused, a running VM is not started twice), so running
    one again finishes what the lost one began."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        def before_retry(exc: BaseException) -> None:
            if connection_lost(self.uri):
                log.warning("lost the connection to %s during %s; waiting for the daemon",
                            self.uri, method.__name__)
                wait_for_daemon(self.uri, self.reconnect_timeout)
                self.after_reconnect()
            else:
                time.sleep(RETRY_DELAY_S)

        return retry(lambda: method(self, *args, **kwargs), transient=lambda exc: transient(exc, self.uri),
                     what=f"libvirt {method.__name__} on {self.uri}", attempts=ATTEMPTS,
                     before_retry=before_retry)

    return wrapper

