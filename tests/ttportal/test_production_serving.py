"""Production serving, end to end: gunicorn with TT_DEBUG=0 on a throwaway TT_VAR_DIR
(a migrated SQLite database, collected static files), asked over HTTP as the
TLS-terminating proxy would ask it (X-Forwarded-Proto: https, X-Forwarded-For)."""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).with_name("gunicorn")
ADMIN, PASSWORD = "olga", "a-long-operator-password-" + secrets.token_hex(4)
PROXIED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "127.0.0.1"}
FROM_OUTSIDE = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Site:
    def __init__(self, port: int):
        self.port = port

    def get(self, path: str, headers: dict | None = None, *, method: str = "GET", body: str | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            response.body = response.read()
            return response
        finally:
            conn.close()


def cookies(response) -> dict[str, str]:
    """Each Set-Cookie header as it was sent, by cookie name."""
    return {value.split("=", 1)[0]: value
            for name, value in response.getheaders() if name.lower() == "set-cookie"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    var = tmp_path_factory.mktemp("var")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TT_")}
    env.update(TT_VAR_DIR=str(var), TT_DEBUG="0", TT_SECRET_KEY=secrets.token_urlsafe(50),
               TT_BIND=f"127.0.0.1:{port}", TT_WEB_WORKERS="2",
               TT_ADMIN_USER=ADMIN, TT_ADMIN_PASSWORD=PASSWORD)
    commands = (["migrate", "--noinput", "-v0"], ["collectstatic", "--noinput", "-v0"], ["tt_first_admin"])
    for command in commands:
        done = subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    log = (var / "gunicorn.log").open("w")
    server = subprocess.Popen([str(GUNICORN), "-c", "ttportal/gunicorn_conf.py"], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_alive(Site(port), server, var / "gunicorn.log")
        yield Site(port)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()


def wait_until_alive(site: Site, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if site.get("/healthz").status == 200:
                return
        except OSError:
            pass
        # Between tries, wait on the server itself: one that died is reported at once.
        try:
            server.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"gunicorn exited with {server.returncode}:\n{log.read_text()}")
    pytest.fail(f"gunicorn did not answer within 60 s:\n{log.read_text()}")


def test_it_serves_the_login_page_with_the_security_headers(site):
    response = site.get("/accounts/login/", PROXIED)
    assert response.status == 200
    assert response.getheader("Server", "") == "uvicorn"  # gunicorn's uvicorn workers: ASGI
    assert response.getheader("X-Frame-Options") == "DENY"
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert response.getheader("Referrer-Policy") == "same-origin"
    assert response.getheader("Strict-Transport-Security") == "max-age=31536000; includeSubDomains"
    csrf = cookies(response)["csrftoken"]
    assert "; Secure" in csrf and "SameSite=Lax" in csrf


def test_it_redirects_plain_http_to_https_without_hsts(site):
    response = site.get("/accounts/login/", {"X-Forwarded-For": "127.0.0.1"})
    assert response.status == 301
    assert response.getheader("Location") == f"https://127.0.0.1:{site.port}/accounts/login/"
    assert response.getheader("Strict-Transport-Security") is None


def test_it_believes_the_scheme_only_from_a_trusted_proxy(site):
    # gunicorn and ttportal.proxy trust 127.0.0.1 only: a header from anyone else is
    # dropped; this request comes from 127.0.0.1 itself, so it is believed. What a
    # stranger sends is covered in tests/ttportal/test_proxy.py.
    assert site.get("/accounts/login/", PROXIED).status == 200


def test_it_signs_in_with_secure_http_only_session_cookies(site):
    form = site.get("/accounts/login/", PROXIED)
    csrf_cookie = cookies(form)["csrftoken"].split(";", 1)[0]
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', form.body).group(1).decode()
    response = site.get(
        "/accounts/login/",
        {**PROXIED, "Cookie": csrf_cookie, "Origin": f"https://127.0.0.1:{site.port}",
         "Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
        body=urlencode({"username": ADMIN, "password": PASSWORD, "csrfmiddlewaretoken": token}),
    )
    assert response.status == 302, response.body[:500]
    session = cookies(response)["sessionid"]
    assert "; Secure" in session and "; HttpOnly" in session and "SameSite=Lax" in session
    # A staff session reads /metrics from anywhere.
    session_cookie = session.split(";", 1)[0]
    assert site.get("/metrics", {**FROM_OUTSIDE, "Cookie": session_cookie}).status == 200


def test_it_serves_hashed_static_files_for_ever_through_whitenoise(site):
    page = site.get("/accounts/login/", PROXIED).body.decode()
    hashed = re.search(r'src="(/static/js/htmx\.min\.[0-9a-f]{12}\.js)"', page).group(1)
    response = site.get(hashed, {**PROXIED, "Accept-Encoding": "gzip"})
    assert response.status == 200
    assert response.getheader("Cache-Control") == "max-age=315360000, public, immutable"
    assert response.getheader("Content-Encoding") == "gzip"  # WhiteNoise's precompressed copy
    assert "javascript" in response.getheader("Content-Type")
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    # The same file by its plain name: served, but cached only briefly.
    plain = site.get("/static/js/htmx.min.js", PROXIED)
    assert plain.status == 200 and plain.getheader("Cache-Control") == "max-age=60, public"
    css = re.search(r'href="(/static/css/portal\.[0-9a-f]{12}\.css)"', page).group(1)
    assert site.get(css, PROXIED).status == 200


def test_it_answers_the_probes_over_plain_http_whatever_the_host(site):
    # Not redirected to HTTPS, and not refused for a Host outside ALLOWED_HOSTS.
    for headers in ({}, {"Host": "10.1.2.3:8000"}):
        alive = site.get("/healthz", headers)
        assert alive.status == 200 and json.loads(alive.body) == {"status": "alive"}
        ready = site.get("/readyz", headers)
        assert ready.status == 200, ready.body
        body = json.loads(ready.body)
        assert body["status"] == "ready"
        assert body["checks"]["database"] == {"ok": True}
        assert body["checks"]["broker"] == {"ok": True, "broker": "orm"}
        assert ready.getheader("Cache-Control") == "no-store"


def test_it_serves_metrics_to_a_local_scraper_only(site):
    response = site.get("/metrics")  # Prometheus on this host, over plain HTTP
    assert response.status == 200
    names = {family.name for family in text_string_to_metric_families(response.body.decode())}
    assert {"tt_vms", "tt_operations", "tt_task_queue_depth", "tt_envs_expiring_next_hour"} <= names
    assert site.get("/metrics", FROM_OUTSIDE).status == 403


def test_it_serves_websockets_and_refuses_one_without_a_session(site):
    # ASGI through gunicorn's uvicorn workers: the console's route answers the upgrade,
    # and with no session (nor token) refuses it at the handshake.
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{site.port}/ws/vms/1/console/", origin="https://127.0.0.1",
                additional_headers={"X-Forwarded-Proto": "https"}, open_timeout=10)
    assert refused.value.response.status_code == 403
