"""Webhooks: a JSON body POSTed to the user's URL, signed with the webhook's secret.

Headers of every attempt:

    Content-Type:    application/json
    X-TT-Event:      env.expiring | env.expired | operation.failed | test
    X-TT-Delivery:   the delivery's id (the same on every attempt: receivers dedupe on it)
    X-TT-Timestamp:  Unix seconds when this attempt was signed
    X-TT-Signature:  sha256=<hex HMAC-SHA256(secret, "<X-TT-Timestamp>." + raw body)>

The timestamp is part of what is signed, so a receiver that refuses timestamps more
than a few minutes old cannot be fed an old body again (a replay).

Where we send (refused_address): public addresses only unless TT_WEBHOOK_ALLOW_PRIVATE;
never a node's VM network nor a node's own addresses (its public host and the host of
its engine URI, when they are written as addresses); never IPv6 site-local (fec0::/10)
or local-use NAT64 (64:ff9b:1::/48). An IPv6 address that carries an IPv4 one
(IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d, NAT64 64:ff9b::/96, 6to4
2002::/16, Teredo 2001::/32) is judged by the IPv4 it carries as well: `::127.0.0.1`
is loopback. An address in the URL is checked when the webhook is saved; at each
delivery the host name is resolved, every address it resolves to is checked (one
refused refuses the delivery: a name that also points inward is not trusted), and only
a checked address is connected to (a name that resolves elsewhere a moment later
cannot slip past the check). Redirects are not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import re
import socket
import ssl
import time
from urllib.parse import urlsplit

from django.conf import settings

from notifications.channels import Outcome
from ttportal import limits
from ttportal.errors import ConflictingInput, InvalidInput

USER_AGENT = "TT-Portal-Webhook/1"
# What of an answer's body is kept for the delivery log.
ANSWER_KEPT = 500
# A Retry-After longer than this is not waited for (the backoff applies instead).
RETRY_AFTER_MAX = 3600

_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


# --- the URL ---------------------------------------------------------------------------


def check_url(url, field: str = "endpoint") -> str:
    """`url` if it is a webhook URL we send to; else refused naming `field`: 400 for what
    the API's schema states (limits.WEBHOOK_URL_PATTERN), 422 for the rest."""
    if not isinstance(url, str) or len(url) > limits.WEBHOOK_URL_MAX or not limits.matches(
        limits.WEBHOOK_URL_PATTERN, url
    ):
        raise InvalidInput(field, limits.WEBHOOK_URL_RULE)
    try:
        parts = urlsplit(url)
    except ValueError:  # brackets around what is no IPv6 address: "http://[f5]/"
        raise ConflictingInput(field, "must name a valid host") from None
    try:
        port = parts.port
    except ValueError:  # past 65535
        port = 0
    if port == 0:
        raise ConflictingInput(field, "must have a port between 1 and 65535")
    host = parts.hostname or ""
    address = _literal(host)
    if address is None:
        if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in host.rstrip(".").split(".")):
            raise ConflictingInput(field, f"must name a valid host, got {host!r}")
        if host.rstrip(".").lower() == "localhost" or host.rstrip(".").lower().endswith(".localhost"):
            address = ipaddress.ip_address("127.0.0.1")
    elif parts.netloc.startswith("[") != (address.version == 6):
        raise ConflictingInput(field, f"must name a valid host, got {host!r}")
    if address is not None:
        refusal = refused_address(address)
        if refusal:
            raise ConflictingInput(field, refusal)
    return url


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


# IPv6 ranges refused whatever they carry: site-local (deprecated, RFC 3879, yet routed
# inside some sites) and local-use NAT64 (RFC 8215: the IPv4 inside sits where the
# site's own prefix length says, so it cannot be read out).
REFUSED_V6 = (ipaddress.ip_network("fec0::/10"), ipaddress.ip_network("64:ff9b:1::/48"))
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052's well-known prefix
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # ::a.b.c.d (deprecated, still parsed)


def embedded_ipv4(address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 one carries (none for an IPv4 or a plain IPv6 one)."""
    if address.version != 6:
        return []
    found = []
    if address.ipv4_mapped:
        found.append(address.ipv4_mapped)
    if address.sixtofour:
        found.append(address.sixtofour)
    if address.teredo:  # (server, client): the client is the one tunnelled to
        found.extend(address.teredo)
    if address in NAT64 or (address in IPV4_COMPATIBLE and int(address) > 1):  # not :: nor ::1
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def refused_address(address) -> str:
    """Why we do not send to `address` ("" if we do)."""
    if address.is_unspecified or address.is_multicast:
        return f"must not be sent to {address}"
    for net in REFUSED_V6:
        if address.version == 6 and address in net:
            return f"must not be sent to {address} ({net} is a site's own range)"
    for inner in embedded_ipv4(address):
        refusal = refused_address(inner)
        if refusal:
            return f"must not be sent to {address}, which carries the IPv4 address {inner}: {refusal}"
    for net in _vm_networks():
        if address in net:
            return f"must not be sent into a VM network ({address} is in {net})"
    if address in _node_addresses():
        return f"must not be sent to a node of this site ({address})"
    if not settings.TT_WEBHOOK_ALLOW_PRIVATE and not address.is_global:
        return (f"must be a public address, and {address} is not (an operator allows private ones "
                "with TT_WEBHOOK_ALLOW_PRIVATE=1)")
    return ""


def _vm_networks() -> list:
    from nodes.models import Node

    nets = []
    for cidr in Node.objects.values_list("vm_network", flat=True):
        try:
            nets.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            continue
    return nets


def _node_addresses() -> set:
    """The nodes' own addresses: their public host and their engine URI's host, where
    written as an address (a name is not resolved here: see the module's docstring)."""
    from nodes.models import Node

    found = set()
    for public_host, uri in Node.objects.values_list("public_host", "uri"):
        try:
            engine_host = urlsplit(uri).hostname
        except ValueError:
            engine_host = None
        for host in (public_host, engine_host):
            address = _literal((host or "").strip("[]"))
            if address is not None:
                found.add(address)
    return found


# --- signing ------------------------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The X-TT-Signature header's value."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def new_secret() -> str:
    import secrets

    return "whsec_" + secrets.token_urlsafe(32)


# --- sending -------------------------------------------------------------------------------


class _Pinned(http.client.HTTPConnection):
    """Connects to the address that was checked, whatever the name resolves to now."""

    def __init__(self, host, port, *, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    def __init__(self, host, port, *, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def send(url: str, *, secret: str, body: bytes, event: str, delivery_id: int) -> Outcome:
    """One POST of `body` to `url`. Network errors, 429 and 5xx may be retried; any other
    answer that is not 2xx, or an address we do not send to, may not."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return Outcome(False, retry=True, error=f"cannot resolve {parts.hostname}: {exc}")
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    if not addresses:
        return Outcome(False, retry=True, error=f"cannot resolve {parts.hostname}: no address")
    for address in addresses:  # every one: a name that also points inward is not sent to
        refusal = refused_address(address)
        if refusal:
            return Outcome(False, error=f"{parts.hostname}: {refusal}")
    allowed = addresses
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-TT-Event": event,
        "X-TT-Delivery": str(delivery_id),
        "X-TT-Timestamp": str(timestamp),
        "X-TT-Signature": signature(secret, timestamp, body),
    }
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    connection_class = _PinnedTLS if https else _Pinned
    conn = connection_class(parts.hostname, port, address=str(allowed[0]),
                            timeout=settings.TT_WEBHOOK_TIMEOUT)
    try:
        conn.request("POST", path, body=body, headers=headers)
        answer = conn.getresponse()
        text = answer.read(ANSWER_KEPT).decode("utf-8", "replace")
        status = answer.status
        retry_after = _seconds(answer.getheader("Retry-After"))
    except ssl.SSLCertVerificationError as exc:
        return Outcome(False, error=f"TLS certificate refused: {exc.verify_message or exc}")
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(False, retry=True, error=f"{exc.__class__.__name__}: {exc or 'no answer'}")
    finally:
        conn.close()
    if 200 <= status < 300:
        return Outcome(True, status=status)
    said = f"HTTP {status}" + (f": {text.strip()[:ANSWER_KEPT]}" if text.strip() else "")
    if status == 429 or status >= 500:
        return Outcome(False, retry=True, error=said, status=status, retry_after=retry_after)
    if 300 <= status < 400:
        said += " (redirects are not followed: give the final URL)"
    return Outcome(False, error=said, status=status)


def _seconds(value: str | None) -> int | None:
    if value and value.strip().isdigit():
        return min(int(value.strip()), RETRY_AFTER_MAX)
    return None
