"""Behind the TLS proxy: the scheme and the client's address are believed from the
trusted proxies only (ttportal/proxy.py)."""

from __future__ import annotations

import ipaddress

import pytest
from django.test import RequestFactory

from ttportal.proxy import TrustedProxies, client_address


def request(remote: str, **headers):
    meta = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
    return RequestFactory().get("/", REMOTE_ADDR=remote, **meta)


@pytest.mark.parametrize(
    ("remote", "headers", "client"),
    [
        # A client that dials the web server itself is its peer, whatever it claims.
        ("203.0.113.7", {}, "203.0.113.7"),
        ("203.0.113.7", {"X-Forwarded-For": "127.0.0.1"}, "203.0.113.7"),
        # A local scraper or probe, speaking for itself.
        ("127.0.0.1", {}, "127.0.0.1"),
        ("::1", {}, "::1"),
        ("::ffff:127.0.0.1", {}, "127.0.0.1"),
        # Through the proxy: the nearest address it did not add itself.
        ("127.0.0.1", {"X-Forwarded-For": "203.0.113.7"}, "203.0.113.7"),
        ("127.0.0.1", {"X-Forwarded-For": "127.0.0.1, 203.0.113.7"}, "203.0.113.7"),
        ("127.0.0.1", {"X-Forwarded-For": "198.51.100.1, 203.0.113.7, 127.0.0.1"}, "203.0.113.7"),
        # curl on the proxy's own host, through the proxy.
        ("127.0.0.1", {"X-Forwarded-For": "127.0.0.1"}, "127.0.0.1"),
        # A proxy that says how the client came but not who it is: nobody can tell.
        ("127.0.0.1", {"X-Forwarded-Proto": "https"}, None),
        ("127.0.0.1", {"X-Forwarded-For": "not-an-address"}, None),
    ],
)
def test_it_tells_the_client_address(remote, headers, client):
    found = client_address(request(remote, **headers))
    assert found == (ipaddress.ip_address(client) if client else None)


def test_it_trusts_the_proxies_it_is_told_to(settings):
    settings.TT_TRUSTED_PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)
    assert client_address(request("10.1.2.3", **{"X-Forwarded-For": "203.0.113.7"})) == \
        ipaddress.ip_address("203.0.113.7")
    assert client_address(request("127.0.0.1", **{"X-Forwarded-For": "203.0.113.7"})) == \
        ipaddress.ip_address("127.0.0.1")


def test_it_drops_forwarding_headers_from_anyone_but_a_trusted_proxy():
    seen = {}

    def view(req):
        seen["secure"] = req.is_secure()
        seen["forwarded_for"] = req.META.get("HTTP_X_FORWARDED_FOR")

    middleware = TrustedProxies(view)
    middleware(request("203.0.113.7", **{"X-Forwarded-Proto": "https", "X-Forwarded-For": "127.0.0.1"}))
    assert seen == {"secure": False, "forwarded_for": None}
    middleware(request("127.0.0.1", **{"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}))
    assert seen == {"secure": True, "forwarded_for": "203.0.113.7"}
