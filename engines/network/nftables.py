"""The node's NAT, egress policy and isolation in two nftables tables owned by TT Portal.

`ip <table>` (routed traffic):

    map  fwd_tcp / fwd_udp : public port -> VM ip . inner port   (DNAT, one rule each)
    map  wake_tcp          : public port -> the node's waker (gateway . TT_WAKER_PORT), for
                             the TCP ports of a sleeping Env (looked up first: envs/sleep.py)
    (the three count, per element, the connections they forwarded: NAT looks a connection
    up only at its first packet; port_connections)
    set  denied            : VM ips that may reach nothing beyond the node network (nor
                             the node's resolver: its answers would come from upstream)
    set  blacklist         : VM ip . blocked ip pairs
    set  vm_addrs          : every VM's ip
    (the three count, per element, the packets they dropped: each is looked up only last
    in rules that drop what matches, so an element's counter is that VM's blocked attempts)
    set  private_nets      : where forwarded traffic from the VM network may not go (every
                             destination that is not global: engines.network.addresses)
    set  allowed_nets      : exceptions to private_nets the operator opened
    set  host_open         : protocol . port on the host VMs may use beyond DHCP and DNS

`ip6 <table>`: the same two interval sets for IPv6, and one rule. VMs get no IPv6
from the node, and the bridge drops every IPv6 frame a VM port sends; this holds
should that ever change.

`bridge <table>` (frames on the node's bridge: between VMs they reach no ip hook
unless br_netfilter is loaded, and nothing here depends on it). Bridge hooks see
every bridge of the host, so each chain first lets through what does not come from
one of this node's VM ports (other nodes' bridges, podman's, libvirt's default
network). A container's port is named before its first process runs (the
docker engine renames it between podman's init and start). The forward chain
runs before br_netfilter's own forward hook (see BRIDGE_FORWARD_PRIORITY).

    set  ports, port_macs  : port . MAC . IP and port . MAC of each VM (anti-spoofing)
    set  port_chaddr       : port . MAC of each VM, the MAC as the number a DHCP request's
                             `chaddr` must carry (a raw payload match)
    set  vm_ports          : each VM's port, counting the frames dropped as spoofed
    map  port_env          : port -> the VM's Env (as a packet mark)
    set  port_reach        : port . Env for every Env whose VMs may send to that port
    set  vm_nets           : the VM networks of every node of this host
    (and one rule refuses frames a VM sends the host to be routed to a VM of any node)

One rule per purpose, whatever the number of VMs and Envs; a change adds or
removes one VM's elements in a single `nft -f` transaction across both tables
(atomic). Removal is made idempotent by first adding the element as we believe
it is installed (a no-op when present), then deleting it. If a table has
drifted from what we believe, the transaction fails and we fall back to reading
the VM's real elements from the kernel.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess

from engines.network.addresses import DEFAULT_DENY_V4, DEFAULT_DENY_V6, collapsed
from engines.network.firewall import BRIDGE_SETS, DROP_REASONS, IP_SETS, Element, Firewall, elements_of
from engines.specs import VmSpec

log = logging.getLogger(__name__)


# A VM that dials a forwarded port of the node reaches that VM like anyone does. With
# br_netfilter loaded (podman and Docker load it), the kernel delivers such a
# DNATed frame back through the bridge; this mark, set once NAT is done, lets the
# bridge tell it from a frame sent straight to another Env's VM.
HAIRPIN_MARK = "0x74740001"


# The bridge forward chain's priority: `filter` (-200), before br_netfilter's forward hook
# (NF_BR_PRI_BRNF, 0). Where br_netfilter is active (built into some kernels, loaded by
# podman or Docker elsewhere; bridge-nf-call-iptables=1 by default), that hook hands each
# bridged IPv4/IPv6/ARP frame to the ip FORWARD hook, and when the frame comes back the
# kernel resumes the bridge hooks only *above* priority 0: a chain at priority 0 ordered
# after br_netfilter's hook is never run. Which of two priority-0 hooks comes first is
# registration order (the newer first), and br_netfilter registers its hooks when the
# first bridge appears: a table made before any bridge existed (a docker node on a fresh
# host, whose bridge podman makes only at its first container's start) had its isolation
# rules silently skipped for every frame, the other Env's VMs reachable. Running first, the
# chain also clears the Env it put in the packet mark once a frame is accepted: the ip
# hooks br_netfilter runs next would see it (netavark masquerades what carries 0x2000).
BRIDGE_FORWARD_PRIORITY = -200


# The sets whose elements count what they dropped, and what each counts.
COUNTED_SETS = {"denied": "egress_denied", "blacklist": "blacklisted", "vm_addrs": "private_network"}
assert set(COUNTED_SETS.values()) == set(DROP_REASONS)
# The maps whose elements count the connections they forwarded (port_connections).
COUNTED_MAPS = ("fwd_tcp", "fwd_udp", "wake_tcp")

# Where the DHCP client's MAC (`chaddr`) sits in a UDP packet, in bits from the UDP header:
# 8 bytes of UDP header, then byte 28 of BOOTP; 6 bytes long for Ethernet.
CHADDR = "@th,288,48"


# The node's tables, one per family, all named alike.
FAMILIES = ("ip", "ip6", "bridge")


class NftError(RuntimeError):
    pass


def nft(script: str = "", *, args: tuple[str, ...] = ()) -> str:
    """Run a script through `nft -f -` (one atomic transaction), or plain `nft ARGS`."""
    cmd = ["nft", *args] if args else ["nft", "-f", "-"]
    try:
        result = subprocess.run(cmd, input=script, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise NftError("nft is not installed (apt-get install nftables)") from None
    if result.returncode != 0:
        raise NftError(result.stderr.strip() or f"nft exited {result.returncode}")
    return result.stdout


class NftablesFirewall(Firewall):
    def __init__(self, *, vm_network: str, bridge: str, table: str, port_prefix: str,
                 host_open: tuple[tuple[str, int], ...] = (), other_networks: tuple[str, ...] = (),
                 deny_networks: tuple = (), allow_networks: tuple = ()):
        self.table = table
        self.net = ipaddress.IPv4Network(vm_network)
        self.gateway = str(self.net.network_address + 1)
        self.bridge = bridge
        self.port_prefix = port_prefix  # engines.specs.port_prefix of the node
        self.host_open = host_open
        # The VM networks of this host's other nodes: a VM reaches their VMs only as
        # anyone does (their forwarded ports), never routed through this host.
        self.other_networks = tuple(other_networks)
        # Forwarded traffic from the VMs never goes to these (beyond the defaults: the
        # operator's, the nodes' and the site's services' addresses), but for the allowed.
        self.deny_networks = tuple(DEFAULT_DENY_V4) + tuple(DEFAULT_DENY_V6) + tuple(deny_networks)
        self.allow_networks = tuple(allow_networks)

    # --- the tables ---------------------------------------------------------
    def ruleset(self) -> str:
        t, b = f"ip {self.table}", f"bridge {self.table}"
        net, gw, br, ours = str(self.net), self.gateway, self.bridge, self.port_prefix
        host_open = ", ".join(f"{proto} . {port}" for proto, port in self.host_open)
        vm_nets = ", ".join(sorted({net, *self.other_networks}))
        # ARP from a VM: its own port, MAC and address, in the frame and in the ARP body.
        dhcp = "ether type ip ip saddr 0.0.0.0 udp sport 68 udp dport 67"  # before it has an address
        own_arp = ("ether type arp iifname . ether saddr . arp saddr ip @ports "
                   "iifname . arp saddr ether . arp saddr ip @ports")
        # A DHCP request names its client inside (`chaddr`): only the port's own MAC, from
        # 0.0.0.0 or from the VM's address alike (a REQUEST or DECLINE naming another VM's
        # MAC would make the server give away or disable that VM's address).
        dhcp_chaddr = f"ether type ip udp sport 68 udp dport 67 iifname . {CHADDR} != @port_chaddr"
        dhcp_server = "ether type ip udp sport 67"
        dns = "meta l4proto { tcp, udp } th dport 53"
        private = "ip daddr @private_nets ip daddr != @allowed_nets"
        private6 = "ip6 daddr @private_nets ip6 daddr != @allowed_nets"
        return f"""
{self._interval_sets(t, 4)}
{self._interval_sets(f"ip6 {self.table}", 6)}
add chain ip6 {self.table} forward {{ type filter hook forward priority 0; policy accept; }}
flush chain ip6 {self.table} forward
add rule ip6 {self.table} forward iifname "{br}" {private6} counter drop comment "private network"
add table {t}
add map {t} fwd_tcp {{ type inet_service : ipv4_addr . inet_service; counter; }}
add map {t} fwd_udp {{ type inet_service : ipv4_addr . inet_service; counter; }}
add map {t} wake_tcp {{ type inet_service : ipv4_addr . inet_service; counter; }}
add set {t} denied {{ type ipv4_addr; counter; }}
add set {t} blacklist {{ type ipv4_addr . ipv4_addr; counter; }}
add set {t} vm_addrs {{ type ipv4_addr; counter; }}
add set {t} host_open {{ type inet_proto . inet_service; }}
flush set {t} host_open
{f"add element {t} host_open {{ {host_open} }}" if host_open else ""}
add chain {t} prerouting {{ type nat hook prerouting priority -100; policy accept; }}
add chain {t} output {{ type nat hook output priority -100; policy accept; }}
add chain {t} postrouting {{ type nat hook postrouting priority 100; policy accept; }}
add chain {t} forward {{ type filter hook forward priority 0; policy accept; }}
add chain {t} forwarded {{ type filter hook prerouting priority -50; policy accept; }}
add chain {t} input {{ type filter hook input priority 0; policy accept; }}
flush chain {t} prerouting
flush chain {t} output
flush chain {t} postrouting
flush chain {t} forward
flush chain {t} forwarded
flush chain {t} input
add rule {t} prerouting fib daddr type local dnat ip to tcp dport map @wake_tcp
add rule {t} prerouting fib daddr type local dnat ip to tcp dport map @fwd_tcp
add rule {t} prerouting fib daddr type local dnat ip to udp dport map @fwd_udp
add rule {t} output fib daddr type local dnat ip to tcp dport map @wake_tcp
add rule {t} output fib daddr type local dnat ip to tcp dport map @fwd_tcp
add rule {t} output fib daddr type local dnat ip to udp dport map @fwd_udp
add rule {t} postrouting ip saddr {net} ip daddr != {net} masquerade
add rule {t} postrouting oifname "{br}" ip saddr 127.0.0.0/8 masquerade
add rule {t} postrouting oifname "{br}" ip saddr {net} ct status dnat masquerade
add rule {t} forwarded ip daddr {net} ct status dnat meta mark set {HAIRPIN_MARK}
add rule {t} forward ip saddr . ip daddr @blacklist counter drop comment "blacklisted"
add rule {t} forward ct state established,related accept
add rule {t} forward ip daddr != {net} ip saddr @denied counter drop comment "egress denied"
add rule {t} forward iifname "{br}" ip daddr {net} accept
add rule {t} forward iifname "{br}" ct status dnat accept
add rule {t} forward iifname "{br}" {private} ip saddr @vm_addrs counter drop comment "private network"
add rule {t} forward iifname "{br}" {private} counter drop comment "private network, from no VM's address"
add rule {t} input iifname "{br}" ip saddr . ip daddr @blacklist counter drop comment "blacklisted"
add rule {t} input iifname "{br}" {dns} ip saddr @denied counter drop comment "DNS of a VM denied outgoing"
add rule {t} input iifname "{br}" ct state established,related accept
add rule {t} input iifname "{br}" udp sport 68 udp dport 67 accept
add rule {t} input iifname "{br}" ip daddr {gw} meta l4proto {{ tcp, udp }} th dport 53 accept
add rule {t} input iifname "{br}" meta l4proto . th dport @host_open accept
add rule {t} input iifname "{br}" ip daddr {gw} ct status dnat accept comment "to the waker"
add rule {t} input iifname "{br}" counter drop comment "host closed to VMs"
add table {b}
add set {b} ports {{ type ifname . ether_addr . ipv4_addr; }}
add set {b} port_macs {{ type ifname . ether_addr; }}
add set {b} port_chaddr {{ typeof iifname . {CHADDR}; }}
add set {b} vm_ports {{ type ifname; counter; }}
add map {b} port_env {{ type ifname : mark; }}
add set {b} port_reach {{ type ifname . mark; }}
add set {b} vm_nets {{ type ipv4_addr; flags interval; }}
flush set {b} vm_nets
add element {b} vm_nets {{ {vm_nets} }}
add chain {b} prerouting {{ type filter hook prerouting priority -200; policy accept; }}
add chain {b} forward {{ type filter hook forward priority {BRIDGE_FORWARD_PRIORITY}; policy accept; }}
add chain {b} input {{ type filter hook input priority 0; policy accept; }}
flush chain {b} prerouting
flush chain {b} forward
flush chain {b} input
add rule {b} prerouting iifname != "{ours}*" accept
add rule {b} forward iifname != "{ours}*" accept
add rule {b} input iifname != "{ours}*" accept
add rule {b} prerouting {dhcp_server} iifname @vm_ports counter drop comment "DHCP server on a VM port"
add rule {b} prerouting {dhcp_chaddr} iifname @vm_ports counter drop comment "DHCP for another MAC"
add rule {b} prerouting ether type ip iifname . ether saddr . ip saddr @ports accept
add rule {b} prerouting {own_arp} accept
add rule {b} prerouting {dhcp} iifname . ether saddr @port_macs accept
add rule {b} prerouting ether type arp arp saddr ip 0.0.0.0 iifname . ether saddr @port_macs accept
add rule {b} prerouting iifname @vm_ports drop comment "spoofed"
add rule {b} prerouting counter drop comment "spoofed, unknown port"
add rule {b} forward meta mark {HAIRPIN_MARK} accept
add rule {b} forward meta mark set iifname map @port_env
add rule {b} forward oifname . meta mark @port_reach meta mark set 0 accept
add rule {b} forward counter drop comment "isolated"
add rule {b} input ether type ip ip daddr @vm_nets ip daddr != {gw} counter drop comment "routed between VMs"
"""

    def _interval_sets(self, table: str, version: int) -> str:
        """`private_nets` and `allowed_nets` of one IP version, written afresh (settings and
        nodes may have changed since the last start)."""
        kind = "ipv4_addr" if version == 4 else "ipv6_addr"
        lines = [f"add table {table}"]
        for name, items in (("private_nets", self.deny_networks), ("allowed_nets", self.allow_networks)):
            lines += [f"add set {table} {name} {{ type {kind}; flags interval; }}",
                      f"flush set {table} {name}"]
            elements = collapsed(items, version)
            if elements:
                lines.append(f"add element {table} {name} {{ {', '.join(elements)} }}")
        return "\n".join(lines)

    def ensure(self) -> None:
        """Create the tables and (re)write their rules; elements already there are kept,
        but for sets made by an older version without their counters: those are made
        again, empty (the node's rebuild from the database fills them)."""
        try:
            items = self._json("ip")
        except NftError:
            items = []  # no table yet
        outdated = sorted(item[kind]["name"] for item in items for kind in ("set", "map")
                          if kind in item and item[kind]["name"] in (*COUNTED_SETS, *COUNTED_MAPS)
                          and not any("counter" in stmt for stmt in item[kind].get("stmt") or ()))
        if outdated:
            log.warning("nft table %s: sets %s had no counters; made again, their elements come back "
                        "with the next rebuild", self.table, ", ".join(outdated))
            # The rules that use them go first (the ruleset writes them again).
            chains = [item["chain"]["name"] for item in items if "chain" in item]
            nft("".join(f"flush chain ip {self.table} {c}\n" for c in chains)
                + "".join(f"delete {'map' if name in COUNTED_MAPS else 'set'} ip {self.table} {name}\n"
                          for name in outdated))
        nft(self._outdated_chains() + self.ruleset())

    def _outdated_chains(self) -> str:
        """Commands deleting the bridge forward chain an older version hooked at priority 0
        (a base chain's priority cannot be changed in place; the ruleset makes it again)."""
        try:
            items = json.loads(nft(args=("-j", "list", "chain", "bridge", self.table, "forward")))
        except (NftError, ValueError):
            return ""  # no table or chain yet
        chains = [item["chain"] for item in items.get("nftables", []) if "chain" in item]
        if not chains or chains[0].get("prio") == BRIDGE_FORWARD_PRIORITY:
            return ""
        log.warning("nft table bridge %s: forward chain at priority %s, made again at %s (before "
                    "br_netfilter's hook)", self.table, chains[0].get("prio"), BRIDGE_FORWARD_PRIORITY)
        return f"flush chain bridge {self.table} forward\ndelete chain bridge {self.table} forward\n"

    def drop_table(self) -> None:
        for family in FAMILIES:
            try:
                nft(f"delete table {family} {self.table}\n")
            except NftError as exc:
                if "No such file" not in str(exc):
                    raise

    # --- elements ------------------------------------------------------------
    @staticmethod
    def _text(e: Element) -> tuple[str, str]:
        """(key, full element) in nft syntax; a bridge set's key starts with a port name,
        written as a quoted string."""
        fields = [f'"{k}"' if i == 0 and e.family == "bridge" else str(k) for i, k in enumerate(e.key)]
        key = " . ".join(fields)
        if e.value is None:
            return key, key
        return key, f"{key} : {' . '.join(str(v) for v in e.value)}"

    def _script(self, remove: list[Element], add: list[Element]) -> str:
        lines = []
        for e in remove:
            key, full = self._text(e)
            # Adding first makes the delete safe when the element is already gone.
            lines.append(f"add element {e.family} {self.table} {e.table} {{ {full} }}")
            lines.append(f"delete element {e.family} {self.table} {e.table} {{ {key} }}")
        for e in add:
            lines.append(f"add element {e.family} {self.table} {e.table} {{ {self._text(e)[1]} }}")
        return "\n".join(lines) + "\n"

    def change(self, remove: list[Element], add: list[Element]) -> None:
        if not remove and not add:
            return
        try:
            nft(self._script(remove, add))
        except NftError as exc:
            if "File exists" not in str(exc):
                raise
            # A map key holds another value than we believed: the tables drifted
            # from the database. Remove what is really there for these VMs.
            owners = {e.owner for e in remove + add}
            log.warning("nft table %s drifted for %s; reconciling from the kernel", self.table, owners)
            nft(self._script(self.installed(owners), add))

    def rebuild(self, vms: list[VmSpec]) -> None:
        script = self._outdated_chains() + self.ruleset()
        for e_table in (*IP_SETS, *BRIDGE_SETS):
            family = "bridge" if e_table in BRIDGE_SETS else "ip"
            kind = "map" if e_table in COUNTED_MAPS or e_table == "port_env" else "set"
            script += f"flush {kind} {family} {self.table} {e_table}\n"
        script += self._script([], [e for vm in vms for e in elements_of(vm)])
        nft(script)

    # --- reading back ----------------------------------------------------------
    def _json(self, family: str) -> list[dict]:
        return json.loads(nft(args=("-j", "list", "table", family, self.table))).get("nftables", [])

    def listing(self) -> dict[str, list]:
        """Elements of each set and map of both tables, as nft reports them."""
        result: dict[str, list] = {}
        for family in ("ip", "bridge"):
            for item in self._json(family):
                for kind in ("set", "map"):
                    if kind in item:
                        result[item[kind]["name"]] = item[kind].get("elem", [])
        return result

    def rules(self) -> int:
        """How many rules the two tables hold (it must not grow with VMs or Envs)."""
        return sum(1 for family in FAMILIES for item in self._json(family) if "rule" in item)

    def counters(self) -> dict[str, int]:
        """Packets dropped per drop-rule comment (what an operator looks at)."""
        totals: dict[str, int] = {}
        for family in FAMILIES:
            for item in self._json(family):
                rule = item.get("rule")
                if not rule or "comment" not in rule:
                    continue
                for expr in rule["expr"]:
                    if "counter" in expr:
                        name = f"{family}: {rule['comment']}"
                        totals[name] = totals.get(name, 0) + expr["counter"]["packets"]
        return totals

    def drops_per_vm(self) -> dict[str, dict[str, int]]:
        drops: dict[str, dict[str, int]] = {}
        listing = self.listing()
        for name, reason in COUNTED_SETS.items():
            for raw in listing.get(name, []):
                if not (isinstance(raw, dict) and "elem" in raw):
                    continue
                value = raw["elem"]["val"]
                vm_ip = value["concat"][0] if isinstance(value, dict) else value
                per_vm = drops.setdefault(vm_ip, dict.fromkeys(DROP_REASONS, 0))
                per_vm[reason] += raw["elem"].get("counter", {}).get("packets", 0)
        return drops

    def port_connections(self) -> dict[tuple[str, int], int]:
        counts: dict[tuple[str, int], int] = {}
        for name, elems in self.listing().items():
            if name not in COUNTED_MAPS:
                continue
            for raw in elems:
                key = raw[0] if isinstance(raw, list) else raw
                if isinstance(key, dict) and "elem" in key:
                    port = (name[-3:], int(key["elem"]["val"]))
                    counts[port] = counts.get(port, 0) + key["elem"].get("counter", {}).get("packets", 0)
        return counts

    def spoof_drops(self) -> dict[str, int]:
        drops = {}
        for elem in self.listing().get("vm_ports", []):
            inner = elem.get("elem", {}) if isinstance(elem, dict) else {}
            drops[inner.get("val", elem)] = inner.get("counter", {}).get("packets", 0)
        return drops

    def installed(self, owners: set[str]) -> list[Element]:
        found = []
        for name, elems in self.listing().items():
            if name in ("host_open", "vm_nets", "private_nets", "allowed_nets"):  # the node's own, no VM's
                continue
            for raw in elems:
                element = _element(name, raw)
                if element.owner in owners:
                    found.append(element)
        return found


def _element(name: str, raw) -> Element:
    """An element as `nft -j` lists it, back into an Element."""
    if isinstance(raw, dict) and "elem" in raw:  # with a counter
        raw = raw["elem"]["val"]
    if name in COUNTED_MAPS or name == "port_env":
        key, value = raw
        if isinstance(key, dict) and "elem" in key:  # with a counter
            key = key["elem"]["val"]
        value = tuple(value["concat"]) if isinstance(value, dict) else (value,)
        return Element(name, (key,), value)
    if isinstance(raw, dict) and "concat" in raw:
        return Element(name, tuple(raw["concat"]))
    return Element(name, (raw,))
