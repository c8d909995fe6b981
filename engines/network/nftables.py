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

from engines.network.firewall import Element, Firewall, elements_of, owner_ip
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
add rule {t} output fib daddr type local dnat ip to tcp dport map @fwd_tcp
add rule {t} output fib daddr type local dnat ip to udp dport map @fwd_udp
add rule {t} postrouting ip saddr {net} ip daddr != {net} masquerade
add rule {t} postrouting oifname "{br}" ip saddr 127.0.0.0/8 masquerade
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
    @staticmethod
    def _text(e: Element) -> tuple[str, str]:
        """(key, full element) in nft syntax."""
        key = " . ".join(str(k) for k in e.key)
        if e.value is None:
            return key, key
        return key, f"{key} : {' . '.join(str(v) for v in e.value)}"

    def _script(self, remove: list[Element], add: list[Element]) -> str:
        t = f"ip {self.table}"
        lines = []
        for e in remove:
            key, full = self._text(e)
            # Adding first makes the delete safe when the element is already gone.
            lines.append(f"add element {t} {e.table} {{ {full} }}")
            lines.append(f"delete element {t} {e.table} {{ {key} }}")
        for e in add:
            lines.append(f"add element {t} {e.table} {{ {self._text(e)[1]} }}")
        return "\n".join(lines) + "\n"

    def change(self, remove: list[Element], add: list[Element]) -> None:
        if not remove and not add:
            return
        try:
            nft(self._script(remove, add))
        except NftError as exc:
            if "File exists" not in str(exc):
                raise
            # A map key holds another value than we believed: the table drifted
            # from the database. Remove what is really there for these VMs.
            ips = {owner_ip(e) for e in remove + add}
            log.warning("nft table %s drifted for %s; reconciling from the kernel", self.table, ips)
            real = [e for ip in ips for e in self.installed_for(ip)]
            nft(self._script(real, add))

    def rebuild(self, vms: list[VmSpec]) -> None:
        t = f"ip {self.table}"
        script = self.ruleset()
        script += "".join(f"flush set {t} {s}\n" for s in ("denied", "blacklist"))
        script += "".join(f"flush map {t} {m}\n" for m in ("fwd_tcp", "fwd_udp"))
        script += self._script([], [e for vm in vms for e in elements_of(vm)])
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

    def installed_for(self, ip: str) -> list[Element]:
        found = []
        for name, elems in self.listing().items():
            for elem in elems:
                if name.startswith("fwd_"):
                    value = tuple(elem[1]["concat"])
                    if value[0] == ip:
                        found.append(Element(name, (elem[0],), value))
                elif name == "denied" and elem == ip:
                    found.append(Element(name, (ip,)))
                elif name == "blacklist" and elem["concat"][0] == ip:
                    found.append(Element(name, tuple(elem["concat"])))
        return found
