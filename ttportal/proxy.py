"""Who is asking, behind a proxy that terminates TLS.

The proxy says how the client came (X-Forwarded-Proto: https, which makes the
request secure: SECURE_PROXY_SSL_HEADER) and who it is (X-Forwarded-For). Only
the peers in TT_TRUSTED_PROXIES may say so: from anyone else those headers are
dropped before any other middleware reads them, so a client that dials the web
server directly cannot pass for a secure request or for another address.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# What a proxy sets to describe the original request.
FORWARDING_HEADERS = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_X_REAL_IP",
    "HTTP_FORWARDED",
)


def parse_address(text: str | None) -> IpAddress | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def in_networks(address: IpAddress | None, networks) -> bool:
    return address is not None and any(address in network for network in networks)


def is_trusted_proxy(address: IpAddress | None) -> bool:
    return in_networks(address, settings.TT_TRUSTED_PROXIES)


def client_address(request: HttpRequest) -> IpAddress | None:
    """The client's address: the peer's, or when the peer is a trusted proxy, the
    nearest address in X-Forwarded-For that is not one of them. None when it cannot
    be told: a proxy that says how the client came but not who it is, or an entry
    that is not an address."""
    meta = request.META
    peer = parse_address(meta.get("REMOTE_ADDR"))
    if not is_trusted_proxy(peer):
        return peer
    forwarded_for = meta.get("HTTP_X_FORWARDED_FOR")
    if forwarded_for is None:
        # A trusted peer speaking for itself (a local Prometheus, a probe); one that
        # forwards a request without saying for whom could be forwarding anybody's.
        if any(meta.get(header) for header in FORWARDING_HEADERS):
            return None
        return peer
    address = peer
    for hop in reversed(forwarded_for.split(",")):
        address = parse_address(hop)
        if not is_trusted_proxy(address):
            return address
    return address  # every hop is a trusted proxy: the client is the first of them


class TrustedProxies:
    """Drops the forwarding headers of a request that does not come from a trusted proxy."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        if not is_trusted_proxy(parse_address(request.META.get("REMOTE_ADDR"))):
            for header in FORWARDING_HEADERS:
                request.META.pop(header, None)
        return self.get_response(request)
