"""Webhooks: a JSON body POSTed to the user's URL, signed with the webhook's secret.

Headers of every attempt:

    Content-Type:    application/json
    X-TT-Event:      env.expiring | env.expired | operation.failed | test
    X-TT-Delivery:   the delivery's id (the same on every attempt: receivers dedupe on it)
    X-TT-Timestamp:  Unix seconds when this attempt was signed
    X-TT-Signature:  sha256=<hex HMAC-SHA256(secret, "<X-TT-Timestamp>." + raw body)>

The timestamp is part of what is signed, so a receiver that refuses timestamps more
than a few minutes old cannot be fed an old body again (a replay).

Only the address the host name resolved to, and that was checked, is connected to (a
name that resolves elsewhere a moment later cannot slip past the check): public
addresses only unless TT_WEBHOOK_ALLOW_PRIVATE, and never a node's VM network.
Redirects are not followed.
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


def refused_address(address) -> str:
    """Why we do not send to `address` ("" if we do)."""
    if address.is_unspecified or address.is_multicast:
        return f"must not be sent to {address}"
    for net in _vm_networks():
        if address in net:
            return f"must not be sent into a VM network ({address} is in {net})"
    if not settings.TT_WEBHOOK_ALLOW_PRIVATE and not address.is_global:
        return (f"must be a public address, and {address} is not (an operator allows private ones "
                "with TT_WEBHOOK_ALLOW_PRIVATE=1)")
    return ""


def _vm_networks() -> list:
    from engines.models import Node

    nets = []
    for cidr in Node.objects.values_list("vm_network", flat=True):
        try:
            nets.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            continue
    return nets


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
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    allowed = [a for a in addresses if not refused_address(a)]
    if not allowed:
        return Outcome(False, error=f"{parts.hostname}: {refused_address(addresses[0])}")
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
