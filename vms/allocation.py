"""MAC/IP and public-port allocation, safe under concurrency, set-based.

The database is the referee: unique constraints on (node, mac), (node, ip) and
(node, protocol, public_port). A request's ports are found together: random
candidates from the node's range, one query to learn which of them are taken (an
index lookup, whatever the number in use), and on a crowded node (too few of the
candidates free) a second sample sized by the first one's share of free ports, and
only on a nearly full node one read of the whole range (on PostgreSQL an anti-join of
the range against the used ports that returns only the free ones).
Then one insert for them all, inside a savepoint; on a unique violation (a
concurrent request took one between our read and our insert) we pick again, a
bounded number of times. So a request's cost does not grow with the node's use,
and the caller's transaction is held for a few queries, never a query per port
(issue 22: 1,000 ports, each re-reading every used port, held SQLite's write lock
for 86 s).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction

from nodes.models import Node
from ttportal.errors import Exhausted
from vms.models import PortMapping, Vm

_rng = random.SystemRandom()

# Candidates drawn per wanted one: at half the range used, ~2 free per wanted one.
SAMPLE_FACTOR = 4
SAMPLE_EXTRA = 16
# At most this many candidates in one query (SQLite bounds a statement's parameters); a
# request for more than the sample finds goes the crowded node's way.
SAMPLE_MAX = 2048

# used_among(candidates) -> those of them in use; used_among(None) -> all in use.
UsedAmong = Callable[[Iterable[int] | None], set[int]]
# free_in_range(count) -> up to `count` free ones of the whole range, at random, found by
# the database (only the free ones travel).
FreeInRange = Callable[[int], list[int]]


def pick_free(lo: int, hi: int, count: int, used_among: UsedAmong,
              free_in_range: FreeInRange | None = None) -> list[int] | None:
    """`count` distinct free numbers in lo..hi, chosen at random (None: fewer are free).
    One query on a node with room; on a crowded one a second, larger sample sized by the
    first one's share of free numbers, and only when that cannot do, the whole range."""
    size = hi - lo + 1
    if count <= 0:
        return []
    if count > size:
        return None
    sample = _rng.sample(range(lo, hi + 1), min(size, SAMPLE_FACTOR * count + SAMPLE_EXTRA, SAMPLE_MAX))
    used = used_among(sample)
    free = [n for n in sample if n not in used]
    if len(free) >= count:
        return free[:count]
    if len(sample) == size:
        return None  # the sample was the whole range
    if free:  # some room: twice as many candidates as the share of free ones says are needed
        more = 2 * (count - len(free)) * len(sample) // len(free) + SAMPLE_EXTRA
        if more <= SAMPLE_MAX:
            seen = set(sample)
            drawn = _rng.sample(range(lo, hi + 1), min(size, more + len(seen)))
            candidates = [n for n in drawn if n not in seen]
            used = used_among(candidates)
            free += [n for n in candidates if n not in used]
            if len(free) >= count:
                return free[:count]
    if free_in_range is not None:  # crowded: the database chooses among what is left
        free = free_in_range(count)
        return free if len(free) == count else None
    used = used_among(None)  # crowded: choose among what is left
    free = [n for n in range(lo, hi + 1) if n not in used]
    return _rng.sample(free, count) if len(free) >= count else None


def _lost_race(exc: Exception) -> bool:
    """True when our candidates lost to a concurrent request and picking again may succeed."""
    if isinstance(exc, IntegrityError):
        return True  # somebody took one between our read and our insert
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
    addressed = Vm.objects.filter(node=node, mac__isnull=False)

    def used_among(indexes: Iterable[int] | None) -> set[int]:
        if indexes is not None:
            rows = addressed.filter(mac__in=[node.mac_for_index(i) for i in indexes])
        else:
            rows = addressed
        return {Node.index_for_mac(mac) for mac in rows.values_list("mac", flat=True)}

    def attempt() -> bool:
        picked = pick_free(lo, hi, 1, used_among)
        if picked is None:
            raise Exhausted(f"node {node.name} has no free address in {node.vm_network}")
        vm.mac = node.mac_for_index(picked[0])
        vm.ip = node.ip_for_mac(vm.mac)
        vm.addr = vm.ip if vm.net_kind == Vm.NetKind.FLAT else node.public_host
        vm.save()
        return True

    try:
        _with_retries(attempt, f"an address on node {node.name}")
    except Exhausted:
        vm.pk = None
        raise


def allocate_ports(vm: Vm, wanted: Iterable[tuple[str, int]]) -> list[PortMapping]:
    """Map each (protocol, inner port) of `vm` to a free public port of its node."""
    return allocate_ports_of([(vm, wanted)])


def allocate_ports_of(requests: Iterable[tuple[Vm, Iterable[tuple[str, int]]]]) -> list[PortMapping]:
    """The ports of several VMs (one request's): per node and protocol, one pick and one
    insert for them all (see the module's docstring)."""
    groups: dict[tuple[int, str], tuple[Node, list[tuple[Vm, int]]]] = {}
    for vm, wanted in requests:
        for protocol, inner in wanted:
            groups.setdefault((vm.node_id, protocol), (vm.node, []))[1].append((vm, inner))
    made: list[PortMapping] = []
    for key in sorted(groups):  # one order everywhere
        node, items = groups[key]
        made += _allocate_for(node, key[1], items)
    return made


def _allocate_for(node: Node, protocol: str, items: list[tuple[Vm, int]]) -> list[PortMapping]:
    lo, hi = node.port_min, node.port_max
    in_use = PortMapping.objects.filter(node=node, protocol=protocol)
    result: list[PortMapping] = []

    def used_among(ports: Iterable[int] | None) -> set[int]:
        rows = in_use if ports is None else in_use.filter(public_port__in=list(ports))
        return set(rows.values_list("public_port", flat=True))

    def free_in_range(count: int) -> list[int]:
        return _free_ports(node, protocol, lo, hi, count)

    def attempt() -> bool:
        ports = pick_free(lo, hi, len(items), used_among, free_in_range)
        if ports is None:
            n = len(items)
            few = f"no free {protocol} port" if n == 1 else f"fewer than {n} free {protocol} ports"
            raise Exhausted(f"node {node.name} has {few} in {lo}-{hi}")
        result[:] = PortMapping.objects.bulk_create(
            PortMapping(vm=vm, node=node, protocol=protocol, inner_port=inner, public_port=port)
            for (vm, inner), port in zip(items, ports, strict=True)
        )
        return True

    what = f"a {protocol} port" if len(items) == 1 else f"{len(items)} {protocol} ports"
    _with_retries(attempt, f"{what} on node {node.name}")
    return result


# The whole range as rows, less what is used, in an order of chance: an anti-join on the
# unique index (node, protocol, public_port). Only the chosen free ports are returned.
_FREE_PORTS_PG = (
    "SELECT p FROM generate_series(%s, %s) AS p WHERE NOT EXISTS (SELECT 1 FROM {table} AS m "
    "WHERE m.node_id = %s AND m.protocol = %s AND m.public_port = p) ORDER BY random() LIMIT %s"
)


def _free_ports(node: Node, protocol: str, lo: int, hi: int, count: int) -> list[int]:
    """Up to `count` free ports of the node's range, at random: one query. PostgreSQL
    anti-joins the range (generate_series) with the used ports and returns only free ones;
    elsewhere the used ports are read once, bare (no model rows), and the rest chosen here:
    SQLite's generated series is slower than reading them (~1.6 us a row against ~1)."""
    table = connection.ops.quote_name(PortMapping._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_FREE_PORTS_PG.format(table=table), [lo, hi, node.pk, protocol, count])
            return [row[0] for row in cursor.fetchall()]
        cursor.execute(f"SELECT public_port FROM {table} WHERE node_id = %s AND protocol = %s",
                       [node.pk, protocol])
        used = {row[0] for row in cursor.fetchall()}
    free = [port for port in range(lo, hi + 1) if port not in used]
    return _rng.sample(free, min(count, len(free)))


def allocate_port(vm: Vm, protocol: str, inner_port: int) -> PortMapping:
    """Map `inner_port` of `vm` to a free public port of its node."""
    (mapping,) = allocate_ports(vm, [(protocol, inner_port)])
    return mapping


def release(vm: Vm) -> None:
    """Give back the VM's ports, MAC and IP (the VM is gone from its node)."""
    PortMapping.objects.filter(vm=vm).delete()
    Vm.objects.filter(pk=vm.pk).update(mac=None, ip=None)
    vm.mac = vm.ip = None
