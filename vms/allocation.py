"""MAC/IP and public-port allocation, safe under concurrency.

The database is the referee: unique constraints on (node, mac), (node, ip) and
(node, protocol, public_port). We pick a random free candidate (so concurrent
requests rarely collide), insert it inside a savepoint, and on a unique
violation pick again, a bounded number of times.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction

from engines.models import Node
from ttportal.errors import Exhausted
from vms.models import PortMapping, Vm

_rng = random.SystemRandom()


def _pick_free(lo: int, hi: int, used: set[int]) -> int | None:
    size = hi - lo + 1
    if len(used) >= size:
        return None
    if len(used) < size // 2:  # sparse: sampling finds a free one in ~1-2 tries
        while True:
            candidate = _rng.randint(lo, hi)
            if candidate not in used:
                return candidate
    free = [i for i in range(lo, hi + 1) if i not in used]
    return _rng.choice(free) if free else None


def _lost_race(exc: Exception) -> bool:
    """True when our candidate lost to a concurrent request and picking again may succeed."""
    if isinstance(exc, IntegrityError):
        return True  # somebody took it between our read and our insert
    # PostgreSQL: two requests each allocating several things in one transaction
    # (build_vms) can each hold an uncommitted candidate the other then picks;
    # both wait on the unique index and one is chosen as the deadlock victim.
    # Its savepoint rolls back and it picks again, the other one proceeds.
    return getattr(exc.__cause__, "sqlstate", None) == "40P01"  # deadlock_detected


def _with_retries(attempt: Callable[[], bool], what: str) -> None:
    for _ in range(settings.TT_ALLOCATION_RETRIES):
        try:
            with transaction.atomic():
                if attempt():
                    return
        except (IntegrityError, OperationalError) as exc:
            if not _lost_race(exc):
                raise
    raise Exhausted(f"could not allocate {what} after {settings.TT_ALLOCATION_RETRIES} attempts")


def save_with_address(vm: Vm) -> None:
    """Give `vm` a free MAC on its node (and so its IP) and save it."""
    node: Node = vm.node
    lo, hi = node.host_index_bounds()

    def attempt() -> bool:
        used_macs = Vm.objects.filter(node=node, mac__isnull=False).values_list("mac", flat=True)
        index = _pick_free(lo, hi, {Node.index_for_mac(m) for m in used_macs})
        if index is None:
            raise Exhausted(f"node {node.name} has no free address in {node.vm_network}")
        vm.mac = node.mac_for_index(index)
        vm.ip = node.ip_for_mac(vm.mac)
        vm.addr = vm.ip if vm.net_kind == Vm.NetKind.FLAT else node.public_host
        vm.save()
        return True

    try:
        _with_retries(attempt, f"an address on node {node.name}")
    except Exhausted:
        vm.pk = None
        raise


def allocate_port(vm: Vm, protocol: str, inner_port: int) -> PortMapping:
    """Map `inner_port` of `vm` to a free public port of its node."""
    node: Node = vm.node
    result: list[PortMapping] = []

    def attempt() -> bool:
        used = set(
            PortMapping.objects.filter(node=node, protocol=protocol).values_list("public_port", flat=True)
        )
        port = _pick_free(node.port_min, node.port_max, used)
        if port is None:
            raise Exhausted(
                f"node {node.name} has no free {protocol} port in {node.port_min}-{node.port_max}"
            )
        result.append(
            PortMapping.objects.create(
                vm=vm, node=node, protocol=protocol, inner_port=inner_port, public_port=port
            )
        )
        return True

    _with_retries(attempt, f"a {protocol} port on node {node.name}")
    return result[-1]


def release(vm: Vm) -> None:
    """Give back the VM's ports, MAC and IP (the VM is gone from its node)."""
    PortMapping.objects.filter(vm=vm).delete()
    Vm.objects.filter(pk=vm.pk).update(mac=None, ip=None)
    vm.mac = vm.ip = None
