"""Engine kinds -> driver classes, and one engine instance per process and node."""

from __future__ import annotations

import importlib
import threading

from engines.base import VmEngine
from engines.models import Node
from ttportal.errors import EngineError, ErrorCode

DRIVERS: dict[str, str] = {
    "libvirt": "engines.libvirt.engine.LibvirtEngine",
}

_instances: dict[tuple[str, str, str], VmEngine] = {}
_lock = threading.Lock()


def driver_class(kind: str) -> type[VmEngine]:
    try:
        dotted = DRIVERS[kind]
    except KeyError:
        raise EngineError(f"no driver for engine kind {kind!r}", code=ErrorCode.ENGINE_INIT) from None
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def node_options(node: Node) -> dict:
    return {
        "pool_name": node.pool_name,
        "network_name": node.network_name,
        "vm_network": node.vm_network,
        "gateway_ip": node.gateway_ip,
        "public_host": node.public_host,
    }


def get_engine(node: Node) -> VmEngine:
    """The engine for `node`, initialised once per process (the seed's `init`)."""
    key = (node.kind, node.uri, node.name)
    with _lock:
        engine = _instances.get(key)
        if engine is None:
            engine = driver_class(node.kind)(uri=node.uri, options=node_options(node))
            engine.init()
            _instances[key] = engine
        return engine


def forget_engines() -> None:
    """Drop cached engines (tests, or after a node's settings change)."""
    with _lock:
        _instances.clear()
