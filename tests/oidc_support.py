"""A real OpenID provider for the single sign-on tests (tests/accounts/test_oidc.py,
tests/browser/test_sso.py): django-oauth-toolkit's, a Django project of its own
(tests/oidc_provider/) run as a second process on 127.0.0.1, with an RSA key made here,
RP-initiated logout on, and a `groups` claim from its users' groups.

It fails, never skips, when the provider cannot start: the fixture raises with its log.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from accounts import oidc

ROOT = Path(__file__).resolve().parents[1]
CLIENT_ID = "tt-portal"
START_TIMEOUT = 90  # seconds for the provider to migrate its database and answer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Provider:
    url: str
    issuer: str
    control_token: str
    log: Path

    def _control(self, what: str, **data) -> dict:
        response = requests.post(f"{self.url}/control/{what}", json=data, timeout=10,
                                 headers={"Authorization": f"Bearer {self.control_token}"})
        response.raise_for_status()
        return response.json()

    def user(self, username: str, password: str, *, groups=(), email: str = "") -> str:
        """Make or change one of the provider's users; returns their subject (sub)."""
        return self._control("user", username=username, password=password, groups=list(groups),
                             email=email or f"{username}@idp.example")["sub"]

    def client(self, secret: str, portal_url: str) -> None:
        """Register the portal: its callback, and its sign-in page for after logout."""
        self._control("client", client_id=CLIENT_ID, client_secret=secret,
                      redirect_uri=f"{portal_url}/oidc/callback/",
                      post_logout_redirect_uri=f"{portal_url}/accounts/login/")


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    """The provider process, for a module's tests."""
    work = tmp_path_factory.mktemp("oidc-provider")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    found = Provider(url=url, issuer=f"{url}/o", control_token=secrets.token_urlsafe(16), log=work / "op.log")
    env = {**os.environ, "OP_DIR": str(work), "OP_ISSUER": found.issuer, "OP_RSA_KEY": pem,
           "OP_CONTROL_TOKEN": found.control_token, "PYTHONPATH": str(ROOT)}
    with open(found.log, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "tests.oidc_provider.serve", str(port)],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"the OpenID provider exited ({process.returncode}):\n{found.log.read_text()}")
            try:
                if requests.get(f"{found.issuer}/.well-known/openid-configuration", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the OpenID provider did not answer in {START_TIMEOUT} s:\n"
                            f"{found.log.read_text()}")
            time.sleep(0.2)
        yield found
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def configure_portal(settings, provider: Provider, portal_url: str, **extra) -> str:
    """Point the portal's settings at the provider and register the portal there."""
    secret = secrets.token_urlsafe(24)
    provider.client(secret, portal_url)
    settings.TT_OIDC_ISSUER = provider.issuer
    settings.TT_OIDC_CLIENT_ID = CLIENT_ID
    settings.TT_OIDC_CLIENT_SECRET = secret
    settings.TT_OIDC_PROVIDER_NAME = "Test IdP"
    for name, value in extra.items():
        setattr(settings, name, value)
    oidc.forget_discovery()
    return secret


_INPUT = re.compile(r"<input[^>]*>", re.I)
_ATTR = re.compile(r'(\w+)="([^"]*)"')


def form_fields(html: str) -> dict[str, str]:
    """The named inputs of a page's form(s) with their values."""
    fields = {}
    for tag in _INPUT.findall(html):
        attrs = {k.lower(): unescape(v) for k, v in _ATTR.findall(tag)}
        if "name" in attrs:
            fields[attrs["name"]] = attrs.get("value", "")
    return fields


def provider_sign_in(authorize_url: str, username: str, password: str,
                     browser: requests.Session | None = None) -> tuple[str, requests.Session]:
    """Be the browser at the provider: its sign-in form, then its consent page; returns the
    URL the provider sends the browser back to (the portal's callback, code and state)."""
    browser = browser or requests.Session()
    response = browser.get(authorize_url, allow_redirects=True, timeout=10)
    if "op-sign-in" in response.text:  # the provider's own sign-in page
        fields = form_fields(response.text)
        fields.update(username=username, password=password)
        response = browser.post(response.url, data=fields, allow_redirects=True, timeout=10,
                                headers={"Referer": response.url})
    assert "allow" in response.text, f"no consent page: {response.status_code} {response.text[:500]}"
    fields = form_fields(response.text)
    fields["allow"] = "Authorize"
    answer = browser.post(response.url, data=fields, allow_redirects=False, timeout=10,
                          headers={"Referer": response.url})
    assert answer.status_code == 302, f"consent was not accepted: {answer.status_code} {answer.text[:500]}"
    return urljoin(response.url, answer.headers["Location"]), browser


def query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
