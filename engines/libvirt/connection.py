"""One libvirt connection per process and URI, reopened when it has closed."""

from __future__ import annotations

import threading

import libvirt

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
