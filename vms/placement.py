"""Where a new VM runs: filters, then a weigher, the way Nova and Incus place.

Each filter is a small named function that either passes a node or says why it
cannot take the VM; the weigher orders the nodes left (TT_PLACEMENT: "spread" by
free memory, or "pack"). The VMs of one Env go to one node while it passes the
filters: a node already holding the Env (or chosen for an earlier VM of the same
request) is preferred over the weigher's pick.

A `Placer` reads every node's use from its counters (vms.models.NodeUsage, which
the database keeps with the VMs, ports and snapshots they count: vms/node_usage.py)
in one query with the nodes, then places a request's VMs in memory, counting what
earlier VMs of the request take (they are not in the database yet). When the
filters leave no node, the refusal says which filter removed which node.
Allocation (vms/allocation.py) still has the last word on addresses and ports: a
race that took the last one is `resources_exhausted`.

Capacity is never oversold by concurrent requests: inside a transaction the Placer
first takes the placement lock, then reads the use. A concurrent placement waits
for the lock and, under READ COMMITTED, reads the counters as the first one's new VMs
left them when it committed (their triggers run in its transaction). On
PostgreSQL the lock is one transaction-level advisory lock (pg_advisory_xact_lock:
no row is written, whatever the number of nodes); elsewhere the Node rows are
locked (SELECT ... FOR UPDATE, in one order). Lock order everywhere: owner, Env,
placement. Heartbeats live in their own table and never wait on it. (SQLite runs
one writing transaction at a time, BEGIN IMMEDIATE: the same effect.)
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection

from engines.specs import Feature
from nodes.fleet import beat_lateness
from nodes.models import Node
from nodes.registry import driver_class
from ttportal.errors import ConflictingInput, NoCapacity, Unsupported
from vms.models import NodeUsage, VmTemplate

SPREAD, PACK = "spread", "pack"
STRATEGIES = (SPREAD, PACK)
# The free memory the weigher counts for a node of unlimited memory (capacity 0):
# more than any real node has, so such nodes come first when spreading, last when packing.
UNLIMITED_MEM_MB = 1 << 40
# At most this many nodes are named in a refusal (then "and N more").
REASONS_SHOWN = 10


@dataclass
class Ask:
    """What one new VM needs of its node."""

    template: VmTemplate
    cpu: int
    mem_mb: int
    wanted: set[Feature]
    ports: Counter = field(default_factory=Counter)  # protocol -> how many public ports
    # MiB of the node's disk it may take (its disk, grown to disk_mb; a spare's saved
    # memory), and of that what it writes at once (saved memory; a template copy is
    # added per engine: immediate_mb).
    disk_mb: int = 0
    disk_now_mb: int = 0

    @classmethod
    def of(cls, template: VmTemplate, cpu: int, mem_mb: int, wanted: set[Feature],
           ports: Iterable[tuple[str, int]] = (), *, disk_mb: int = 0, disk_now_mb: int = 0) -> Ask:
        return cls(template, cpu, mem_mb, set(wanted), Counter(protocol for protocol, _ in ports),
                   disk_mb=disk_mb, disk_now_mb=disk_now_mb)


@dataclass
class Load:
    """What a node has in use: its live VMs (from the database) plus this request's."""

    vms: int = 0
    cpu: int = 0
    mem_mb: int = 0
    ports: Counter = field(default_factory=Counter)  # protocol -> public ports in use
    # MiB of disk its VMs may take: each one's disk_mb (a template-derived disk grows to
    # it), disk_mb again per snapshot (an estimate: a snapshot may hold up to a whole disk,
    # and no engine reports its real size cheaply), a suspended VM's saved memory (its
    # mem_mb). Warm spares are VMs: counted alike.
    disk_mb: int = 0
    # MiB this request's VMs write at once: not in the node's last reported free space yet.
    disk_now_mb: int = 0

    @classmethod
    def of(cls, usage: NodeUsage | None) -> Load:
        """A node's load as its counters say. A node has its row from the moment it is
        made (a trigger); without one (deleted by hand) it counts as empty until the
        reconcile pass makes it again."""
        if usage is None:
            return cls()
        return cls(vms=usage.vms, cpu=usage.cpu, mem_mb=usage.mem_mb,
                   ports=Counter(tcp=usage.tcp_ports, udp=usage.udp_ports),
                   disk_mb=usage.disk_mb + usage.saved_mb + usage.snapshots_mb)

    def add(self, ask: Ask, now_mb: int | None = None) -> None:
        self.vms += 1
        self.cpu += ask.cpu
        self.mem_mb += ask.mem_mb
        self.ports.update(ask.ports)
        self.disk_mb += ask.disk_mb
        self.disk_now_mb += ask.disk_now_mb if now_mb is None else now_mb


def free_mem(node: Node, load: Load) -> int:
    """MiB the node has left (UNLIMITED_MEM_MB when its memory is unlimited)."""
    if not node.mem_capacity_mb:
        return UNLIMITED_MEM_MB
    return node.mem_capacity_mb - load.mem_mb


def usable_addresses(node: Node) -> int:
    return _usable_in(node.vm_network)


@functools.lru_cache(maxsize=4096)
def _usable_in(vm_network: str) -> int:
    # Parsing the network is most of a filter pass's time at 100 nodes: once per network.
    lo, hi = Node(vm_network=vm_network).host_index_bounds()
    return max(0, hi - lo + 1)


# --- filters: each returns None (the node passes) or why it cannot take the VM ------

Filter = Callable[[Node, Load, Ask], "str | None"]


def enabled(node: Node, load: Load, ask: Ask) -> str | None:
    return None if node.enabled else "disabled"


def up(node: Node, load: Load, ask: Ask) -> str | None:
    """Not marked down, and no heartbeat missed: the sweep may not have marked a node
    down yet that has stopped beating."""
    if node.down_since is not None:
        return "down"
    why = beat_lateness(node)
    return f"down: {why}" if why else None


def drained(node: Node, load: Load, ask: Ask) -> str | None:
    return "drained" if node.drained else None


def engine_kind(node: Node, load: Load, ask: Ask) -> str | None:
    if node.kind in (ask.template.compatible_engines or []):
        return None
    return f"engine {node.kind} does not run {ask.template.name}"


def features(node: Node, load: Load, ask: Ask) -> str | None:
    missing = ask.wanted - set(driver_class(node.kind).features)
    return f"engine {node.kind} lacks {', '.join(sorted(missing))}" if missing else None


def cpu(node: Node, load: Load, ask: Ask) -> str | None:
    if not node.cpu_capacity:
        return None
    free = node.cpu_capacity - load.cpu
    return None if ask.cpu <= free else f"{max(free, 0)} vCPUs free, {ask.cpu} asked"


def memory(node: Node, load: Load, ask: Ask) -> str | None:
    if not node.mem_capacity_mb:
        return None
    free = free_mem(node, load)
    return None if ask.mem_mb <= free else f"{max(free, 0)} MiB free, {ask.mem_mb} MiB asked"


def ports(node: Node, load: Load, ask: Ask) -> str | None:
    size = node.port_max - node.port_min + 1
    for protocol, asked in sorted(ask.ports.items()):
        free = size - load.ports[protocol]
        if asked > free:
            return f"{max(free, 0)} {protocol} ports free, {asked} asked"
    return None


def addresses(node: Node, load: Load, ask: Ask) -> str | None:
    if usable_addresses(node) - load.vms >= 1:
        return None
    return f"no free address in {node.vm_network}"


def immediate_mb(node: Node, ask: Ask) -> int:
    """MiB the VM writes on the node at once: a template copy where the engine copies
    templates (a thin overlay or a container layer starts empty), and saved memory."""
    copy = ask.template.size_mb if ask.template is not None and driver_class(node.kind).copies_template else 0
    return ask.disk_now_mb + copy


def disk(node: Node, load: Load, ask: Ask) -> str | None:
    return disk_refusal(node, load, ask.disk_mb, immediate_mb(node, ask))


def disk_refusal(node: Node, load: Load, more_mb: int, now_mb: int) -> str | None:
    """Why the node's disk cannot take `more_mb` MiB more of commitments, `now_mb` of them
    written at once; None when it can. Two rules:
    - what its VMs may take, plus this, fits in (capacity - TT_NODE_DISK_RESERVE) x
      TT_NODE_DISK_OVERCOMMIT; the capacity is the node's disk_capacity_mb, else the size
      its heartbeat reported (neither: not checked);
    - its free space as last reported, less the reserve and what this request writes at
      once elsewhere on it, exceeds `now_mb` (not reported: not checked)."""
    beat = getattr(node, "heartbeat", None)
    reserve = settings.TT_NODE_DISK_RESERVE
    capacity = node.disk_capacity_mb or getattr(beat, "disk_total_mb", None)
    if capacity:
        room = int((capacity - reserve) * settings.TT_NODE_DISK_OVERCOMMIT) - load.disk_mb
        if more_mb > room:
            return f"disk: {max(room, 0)} MiB left to give, {more_mb} MiB asked"
    free = getattr(beat, "disk_free_mb", None)
    if free is not None:
        spare = free - reserve - load.disk_now_mb
        if spare <= now_mb:
            return f"disk: {max(spare, 0)} MiB free over the {reserve} MiB reserve, {now_mb} MiB needed now"
    return None


# In order: the first that removes a node is the one its refusal names. The static
# filters say whether a node could ever run the VM (the request or the template is at
# fault when they remove every node); the others whether it can take it now.
FILTERS: tuple[Filter, ...] = (
    enabled, engine_kind, features, up, drained, cpu, memory, disk, ports, addresses,
)
STATIC_FILTERS = (enabled, engine_kind, features)
# The filters that read the node alone, never its load (the first ones): their verdicts
# hold for every VM of one request, so a Placer runs them once per template and features.
NODE_FILTERS = (enabled, engine_kind, features, up, drained)
assert FILTERS[:len(NODE_FILTERS)] == NODE_FILTERS  # so the first refusal stays the first
# What a warm spare already holds on its node (it is a live VM there): taking it needs
# none of it again.
HELD_BY_SPARE = (cpu, memory, disk, addresses)


def check_disk_room(node: Node, *, more_mb: int, now_mb: int, what: str) -> None:
    """Refuse (409 no_capacity) what would take `more_mb` MiB more of the node's disk
    (`now_mb` of it at once): a snapshot, a suspend. Under placement's lock inside a
    transaction, as a create's placement, so concurrent ones never oversell it."""
    placer = Placer(only=[node.pk])
    read = next(iter(placer.nodes()), None)
    if read is None:
        return
    why = disk_refusal(read, placer.load_of(read), more_mb, now_mb)
    if why is not None:
        raise NoCapacity(f"node {read.name} has no room for {what}: {why}")


# --- the weigher ----------------------------------------------------------------


def cluster_of(node: Node) -> str:
    """The task cluster that runs the node's operations (operations.runner.queue_of_operation's rule):
    nodes of one cluster are on one host."""
    return node.name if node.own_cluster else settings.Q_CLUSTER["name"]


def weight(node: Node, load: Load, strategy: str) -> tuple:
    """Sort key: the first node wins. Spread: most free memory, then fewer live VMs;
    pack: least free memory that still fits, then more live VMs (fill a node up). The
    name last, so equal nodes are chosen the same way every time."""
    if strategy == PACK:
        return free_mem(node, load), -load.vms, node.name
    return -free_mem(node, load), load.vms, node.name


# --- placing a request's VMs ----------------------------------------------------


# pg_advisory_xact_lock's key for placement: any fixed 64-bit number no other part of
# the site uses ("ttplace" in ASCII).
PLACEMENT_LOCK = 0x7474706C616365


def lock_placement(nodes) -> None:
    """Held to the end of the caller's transaction: see the module's docstring."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PLACEMENT_LOCK])
    else:
        list(nodes.select_for_update().order_by("pk").values_list("pk", flat=True))


class Placer:
    """Places the new VMs of one Env, one `place` call per VM, in request order.

    `env_nodes`: the nodes the Env's live VMs are on already (vm_add), preferred
    like the nodes chosen for earlier VMs of the same request. `only`: read these
    nodes alone (a heartbeat reads its own node's use, not the fleet's).
    """

    def __init__(self, env_nodes: Iterable[int] = (), *, strategy: str | None = None,
                 only: Iterable[int] | None = None):
        self.strategy = strategy or settings.TT_PLACEMENT
        self.preferred: set[int] = set(env_nodes)
        self.only = None if only is None else set(only)
        self._nodes: list[Node] | None = None
        self._loads: dict[int, Load] = {}
        self._node_refusals: dict[tuple, dict[int, tuple[Filter, str]]] = {}

    def nodes(self) -> list[Node]:
        """Every node (inside a transaction: after taking the placement lock) with what its
        live VMs use: two queries, whatever the number of nodes and VMs (the lock; the
        nodes with their heartbeat and their use counters, vms.models.NodeUsage). The
        counters are kept by the database with the rows they count (vms/node_usage.py):
        at 10,000 VMs, summing them here instead took 9 ms of a placement on PostgreSQL."""
        if self._nodes is None:
            nodes = Node.objects.all() if self.only is None else Node.objects.filter(pk__in=self.only)
            if not connection.get_autocommit():
                lock_placement(nodes)
            self._nodes = list(nodes.select_related("heartbeat", "usage").order_by("name"))
            self._loads = {n.pk: Load.of(getattr(n, "usage", None)) for n in self._nodes}
        return self._nodes

    def load_of(self, node: Node) -> Load:
        self.nodes()
        return self._loads[node.pk]

    def refusals(self, ask: Ask) -> dict[int, tuple[Filter, str]]:
        """node id -> (the filter that removes it, why) for every node that cannot take `ask`."""
        nodes = self.nodes()
        key = (getattr(ask.template, "pk", None), frozenset(ask.wanted))
        if key not in self._node_refusals:
            checks = tuple(f for f in FILTERS if f in NODE_FILTERS)
            self._node_refusals[key] = self._first_refusals(nodes, checks, ask)
        removed = dict(self._node_refusals[key])
        passing = [n for n in nodes if n.pk not in removed]
        removed.update(self._first_refusals(passing, tuple(f for f in FILTERS if f not in NODE_FILTERS), ask))
        return removed

    def _first_refusals(self, nodes: list[Node], checks: tuple[Filter, ...],
                        ask: Ask) -> dict[int, tuple[Filter, str]]:
        removed = {}
        for node in nodes:
            load = self._loads[node.pk]
            for check in checks:
                why = check(node, load, ask)
                if why is not None:
                    removed[node.pk] = (check, why)
                    break
        return removed

    def place(self, ask: Ask, field_name: str, *,
              feature_fields: dict[Feature, str] | None = None) -> Node:
        """The node for `ask`, counted as taken; raises the refusal when none will do."""
        nodes = self.nodes()
        removed = self.refusals(ask)
        passing = [n for n in nodes if n.pk not in removed]
        if not passing:
            raise self._refusal(ask, nodes, removed, field_name, feature_fields or {})
        if self.preferred:
            # An Env spans nodes of one cluster only (one host): its operations run on one
            # cluster, which drives the engines and nftables of the nodes on its own host.
            clusters = {cluster_of(n) for n in nodes if n.pk in self.preferred}
            same_host = [n for n in passing if cluster_of(n) in clusters]
            if not same_host:
                raise self._spanning_refusal(ask, nodes, removed, clusters, field_name)
            passing = same_host
        # One Env, one node: a node the Env is on already wins while it passes.
        pool = [n for n in passing if n.pk in self.preferred] or passing
        chosen = min(pool, key=lambda n: weight(n, self._loads[n.pk], self.strategy))
        self._loads[chosen.pk].add(ask, immediate_mb(chosen, ask))
        self.preferred.add(chosen.pk)
        return chosen

    def place_on_spare(self, ask: Ask, nodes: Iterable[Node]) -> Node | None:
        """The node of one of these nodes' spares that the VM can take (vms/warm.py), counted
        as taken (its ports: the spare holds its CPU, memory and address already); None
        when none will do, and the VM is placed cold with place()."""
        mine = {n.pk: n for n in self.nodes()}  # as read under the placement lock
        clusters = {cluster_of(n) for n in mine.values() if n.pk in self.preferred}
        fits = []
        for node in (mine[n.pk] for n in nodes if n.pk in mine):
            load = self._loads[node.pk]
            if clusters and cluster_of(node) not in clusters:
                continue
            if all(check(node, load, ask) is None for check in FILTERS if check not in HELD_BY_SPARE):
                fits.append(node)
        if not fits:
            return None
        # An Env's earlier VMs' node first, then the weigher's order.
        chosen = min(fits, key=lambda n: (n.pk not in self.preferred,
                                          weight(n, self._loads[n.pk], self.strategy)))
        self._loads[chosen.pk].ports.update(ask.ports)
        self.preferred.add(chosen.pk)
        return chosen

    def _spanning_refusal(self, ask: Ask, nodes: list[Node], removed: dict[int, tuple[Filter, str]],
                          clusters: set[str], field_name: str) -> NoCapacity:
        on_host = [n for n in nodes if cluster_of(n) in clusters]
        reasons = "; ".join(f"{n.name}: {removed[n.pk][1]}" for n in on_host if n.pk in removed)
        return NoCapacity(
            f"no node on the host of this Env's other VMs has room ({reasons}); an Env's VMs may span "
            f"nodes of one host only", field=field_name)

    def _refusal(self, ask: Ask, nodes: list[Node], removed: dict[int, tuple[Filter, str]],
                 field_name: str, feature_fields: dict[Feature, str]) -> Exception:
        template = ask.template
        if all(check in STATIC_FILTERS for check, _ in removed.values()):
            # No node could ever run it as asked: the request (or the template) is at fault,
            # not the nodes' load, and retrying would not help.
            runs = [n for n in nodes if removed.get(n.pk, (None,))[0] is features]
            if not runs:
                return ConflictingInput(
                    field_name,
                    f"no enabled node runs an engine this template supports ({template.compatible_engines})",
                )
            return unsupported(template, runs, ask.wanted, field_name, feature_fields)
        # The nodes that could run it but are full first (what an operator may free up),
        # then those that never could; by name within each filter.
        order = sorted(nodes, key=lambda n: (-FILTERS.index(removed[n.pk][0]), n.name))
        reasons = [f"{n.name}: {removed[n.pk][1]}" for n in order]
        more = len(reasons) - REASONS_SHOWN
        text = "; ".join(reasons[:REASONS_SHOWN]) + (f"; and {more} more" if more > 0 else "")
        return NoCapacity(f"no node has room: {text}", field=field_name)


# What a feature a request field asked for lets a VM have, for refusals that name that field.
_FEATURE_GIVES = {Feature.DISK_LIMIT: "a disk larger than its template's"}


def unsupported(template: VmTemplate, candidates: list[Node], wanted: set[Feature], field_name: str,
                feature_fields: dict[Feature, str]) -> Unsupported:
    """Why no candidate node will do. When one feature a field asked for is all that keeps
    some node from taking the VM, that field is at fault (the user can change it); else
    the features, against the template."""
    for feature, asked_by in feature_fields.items():
        if feature not in wanted:
            continue
        rest = wanted - {feature}
        kinds = sorted({n.kind for n in candidates if not (rest - set(driver_class(n.kind).features))})
        if kinds:
            gives = _FEATURE_GIVES.get(feature, feature)
            why = f"{template.name} runs here on {' or '.join(kinds)}, which cannot give a VM {gives}"
            if feature == Feature.DISK_LIMIT:
                why += f": leave it empty for the template's size ({template.min_disk_mb} MiB)"
            return Unsupported(why, field=asked_by)
    return Unsupported(f"no node offers the features {sorted(wanted)}", field=field_name)


def pick_node(
    template: VmTemplate, cpu: int, mem_mb: int, wanted: set[Feature], field_name: str,
    pending: dict[int, tuple[int, int, int]] | None = None, *,
    feature_fields: dict[Feature, str] | None = None,
    ports: Iterable[tuple[str, int]] = (), env_nodes: Iterable[int] = (),
) -> Node:
    """One VM's node (a Placer for a single VM). `pending` maps node id -> (VMs, vCPUs,
    MiB) that earlier VMs of the same request take there; they are preferred too."""
    placer = Placer(env_nodes)
    placer.nodes()
    for node_id, (vms, cpu_more, mem_more) in (pending or {}).items():
        if node_id in placer._loads:
            load = placer._loads[node_id]
            load.vms, load.cpu, load.mem_mb = load.vms + vms, load.cpu + cpu_more, load.mem_mb + mem_more
            placer.preferred.add(node_id)
    return placer.place(Ask.of(template, cpu, mem_mb, wanted, ports), field_name,
                        feature_fields=feature_fields)
