"""The node's NAT and egress policy in one nftables table owned by TT Portal.

    map  fwd_tcp / fwd_udp : public port -> VM ip . inner port   (DNAT, one rule each)
    set  denied            : VM ips that may reach nothing beyond the node network
    set  blacklist         : VM ip . blocked ip pairs

One rule per purpose, whatever the number of VMs; a change adds or removes one
VM's elements in a single `nft -f` transaction (atomic). Removal is made
idempotent by first adding the element as we believe it is installed (a no-op
when present), then deleting it. If the table has drifted from what we
believe, the transaction fails and we fall back to reading the VM's real
elements from the kernel.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess

from engines.network.firewall import Firewall
from engines.specs import VmSpec

log = logging.getLogger(__name__)


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
    def __init__(self, *, vm_network: str, bridge: str, table: str = "ttportal"):
        self.table = table
        self.net = ipaddress.IPv4Network(vm_network)
        self.gateway = str(self.net.network_address + 1)
        self.bridge = bridge

    # --- the table ---------------------------------------------------------
    def ruleset(self) -> str:
        t = f"ip {self.table}"
        net, gw, br = str(self.net), self.gateway, self.bridge
        return f"""
add table {t}
add map {t} fwd_tcp {{ type inet_service : ipv4_addr . inet_service; }}
add map {t} fwd_udp {{ type inet_service : ipv4_addr . inet_service; }}
add set {t} denied {{ type ipv4_addr; }}
add set {t} blacklist {{ type ipv4_addr . ipv4_addr; }}
add chain {t} prerouting {{ type nat hook prerouting priority -100; policy accept; }}
add chain {t} output {{ type nat hook output priority -100; policy accept; }}
add chain {t} postrouting {{ type nat hook postrouting priority 100; policy accept; }}
add chain {t} forward {{ type filter hook forward priority 0; policy accept; }}
add chain {t} input {{ type filter hook input priority 0; policy accept; }}
flush chain {t} prerouting
flush chain {t} output
flush chain {t} postrouting
flush chain {t} forward
flush chain {t} input
add rule {t} prerouting fib daddr type local dnat ip to tcp dport map @fwd_tcp
add rule {t} prerouting fib daddr type local dnat ip to udp dport map @fwd_udp
add rule {t} output ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to tcp dport map @fwd_tcp
add rule {t} output ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to udp dport map @fwd_udp
add rule {t} postrouting ip saddr {net} ip daddr != {net} masquerade
add rule {t} forward ip saddr . ip daddr @blacklist counter drop comment "blacklisted"
add rule {t} forward ip saddr @denied ct state established,related accept
add rule {t} forward ip saddr @denied ip daddr != {net} counter drop comment "egress denied"
add rule {t} input iifname "{br}" ip saddr . ip daddr @blacklist counter drop comment "blacklisted"
add rule {t} input iifname "{br}" ip saddr @denied ct state established,related accept
add rule {t} input iifname "{br}" ip saddr @denied ip daddr != {gw} counter drop comment "egress denied"
"""

    def ensure(self) -> None:
        """Create the table and (re)write its rules; elements already there are kept."""
        nft(self.ruleset())

    def drop_table(self) -> None:
        try:
            nft(f"delete table ip {self.table}\n")
        except NftError as exc:
            if "No such file" not in str(exc):
                raise

    # --- elements ------------------------------------------------------------
    def _elements(self, vm: VmSpec) -> list[tuple[str, str, str]]:
        """(set name, key, full element) for every element the VM should have."""
        items = []
        for port in vm.ports:
            key = str(port.public_port)
            items.append((f"fwd_{port.protocol}", key, f"{key} : {vm.ip} . {port.inner_port}"))
        if vm.deny_outgoing:
            items.append(("denied", vm.ip, vm.ip))
        for blocked in vm.blacklist:
            pair = f"{vm.ip} . {blocked}"
            items.append(("blacklist", pair, pair))
        return items

    def _script(self, remove: list[tuple[str, str, str]], add: list[tuple[str, str, str]]) -> str:
        t = f"ip {self.table}"
        lines = []
        for name, key, element in remove:
            lines.append(f"add element {t} {name} {{ {element} }}")
            lines.append(f"delete element {t} {name} {{ {key} }}")
        for name, _key, element in add:
            lines.append(f"add element {t} {name} {{ {element} }}")
        return "\n".join(lines) + "\n"

    def apply(self, remove: VmSpec | None, add: VmSpec | None) -> None:
        old = self._elements(remove) if remove else []
        new = self._elements(add) if add else []
        if not old and not new:
            return
        try:
            nft(self._script(old, new))
        except NftError as exc:
            if "File exists" not in str(exc) and "No such file" not in str(exc):
                raise
            ip = (remove or add).ip
            log.warning("nft table drifted for %s (%s); reconciling from the kernel", ip, exc)
            nft(self._script(self._installed_for(ip), new))

    def add_vm(self, vm: VmSpec) -> None:
        self.apply(vm, vm)

    def remove_vm(self, vm: VmSpec) -> None:
        self.apply(vm, None)

    def rebuild(self, vms: list[VmSpec]) -> None:
        """Make the sets and maps hold exactly these VMs' elements (node start)."""
        t = f"ip {self.table}"
        script = self.ruleset()
        script += "".join(f"flush set {t} {s}\n" for s in ("denied", "blacklist"))
        script += "".join(f"flush map {t} {m}\n" for m in ("fwd_tcp", "fwd_udp"))
        script += self._script([], [e for vm in vms for e in self._elements(vm)])
        nft(script)

    # --- reading back ----------------------------------------------------------
    def listing(self) -> dict[str, list]:
        """Elements of each set and map, as nft reports them (for drift repair and tests)."""
        out = json.loads(nft(args=("-j", "list", "table", "ip", self.table)))
        result: dict[str, list] = {}
        for item in out.get("nftables", []):
            for kind in ("set", "map"):
                if kind in item:
                    result[item[kind]["name"]] = item[kind].get("elem", [])
        return result

    def counters(self) -> dict[str, int]:
        """Packets dropped per drop-rule comment (what an operator looks at)."""
        out = json.loads(nft(args=("-j", "list", "table", "ip", self.table)))
        totals: dict[str, int] = {}
        for item in out.get("nftables", []):
            rule = item.get("rule")
            if not rule or "comment" not in rule:
                continue
            for expr in rule["expr"]:
                if "counter" in expr:
                    totals[rule["comment"]] = totals.get(rule["comment"], 0) + expr["counter"]["packets"]
        return totals

    def _installed_for(self, ip: str) -> list[tuple[str, str, str]]:
        found = []
        for name, elems in self.listing().items():
            for elem in elems:
                if name.startswith("fwd_"):
                    key, value = elem[0], elem[1]["concat"]
                    if value[0] == ip:
                        found.append((name, str(key), f"{key} : {value[0]} . {value[1]}"))
                elif name == "denied" and elem == ip:
                    found.append((name, ip, ip))
                elif name == "blacklist":
                    pair = elem["concat"]
                    if pair[0] == ip:
                        text = f"{pair[0]} . {pair[1]}"
                        found.append((name, text, text))
        return found
