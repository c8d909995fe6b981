"""Where a VM's forwarded traffic may not go: every destination that is not a global address.

A tenant controls everything inside their guest. Routed and masqueraded by the node host, its
packets would reach whatever the host can route to: the operator's private networks, the site's
database and Redis, a cloud's metadata service, the other nodes. The node's firewall drops them
(engines.network.nftables), from two interval sets built here: what is denied (these defaults,
the operator's TT_VM_DENY_NETWORKS, every node's addresses and the site's services) and what is
allowed anyway (TT_VM_ALLOW_NETWORKS, an internal package mirror say).

Host names are resolved once, when a node's firewall is built: the kernel matches addresses,
never names, and no packet waits for a resolver.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Not global (IANA special-purpose registries, RFC 6890 and successors).
DEFAULT_DENY_V4 = (
    "0.0.0.0/8",        # "this network"
    "10.0.0.0/8",       # RFC 1918
    "100.64.0.0/10",    # CGNAT (RFC 6598)
    "127.0.0.0/8",      # loopback
    "169.254.0.0/16",   # link-local: cloud metadata (169.254.169.254)
    "172.16.0.0/12",    # RFC 1918
    "192.0.0.0/24",     # IETF protocol assignments
    "192.0.2.0/24",     # documentation (TEST-NET-1)
    "192.88.99.0/24",   # 6to4 relay anycast (deprecated)
    "192.168.0.0/16",   # RFC 1918
    "198.18.0.0/15",    # benchmarking
    "198.51.100.0/24",  # documentation (TEST-NET-2)
    "203.0.113.0/24",   # documentation (TEST-NET-3)
    "224.0.0.0/4",      # multicast
    "240.0.0.0/4",      # reserved, and the limited broadcast 255.255.255.255
)
DEFAULT_DENY_V6 = (
    "::/128",           # unspecified
    "::1/128",          # loopback
    "::/96",            # IPv4-compatible (deprecated)
    "::ffff:0:0/96",    # IPv4-mapped
    "64:ff9b::/96",     # NAT64, well-known prefix: reaches IPv4 behind a translator
    "64:ff9b:1::/48",   # NAT64, local use
    "100::/64",         # discard-only
    "2001::/23",        # IETF protocol assignments (Teredo, ORCHIDs, benchmarking ...)
    "2001:db8::/32",    # documentation
    "2002::/16",        # 6to4: embeds an IPv4 address
    "fc00::/7",         # unique local
    "fe80::/10",        # link-local
    "fec0::/10",        # site-local (deprecated)
    "ff00::/8",         # multicast
)


def networks(items: Iterable[str | Network]) -> list[Network]:
    """Each item as a network (`strict=False`: a host address is a /32 or /128)."""
    return [item if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network)
            else ipaddress.ip_network(str(item).strip(), strict=False) for item in items]


def collapsed(items: Iterable[str | Network], version: int) -> list[str]:
    """The networks of one IP version, merged where they overlap or touch: an nftables
    interval set refuses overlapping elements."""
    chosen = [net for net in networks(items) if net.version == version]
    return [str(net) for net in ipaddress.collapse_addresses(chosen)]


@lru_cache(maxsize=256)
def resolve(host: str) -> tuple[str, ...]:
    """The addresses `host` stands for (itself when it is one); none when it does not resolve
    (a service that does not resolve is reached by nobody, a VM included)."""
    host = host.strip().strip("[]")
    if not host:
        return ()
    try:
        return (str(ipaddress.ip_address(host)),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError):
        return ()
    return tuple(sorted({info[4][0].split("%")[0] for info in infos}))


def host_networks(hosts: Iterable[str]) -> list[Network]:
    """Every address of these hosts, each as a one-address network."""
    return networks(address for host in hosts for address in resolve(host))
