"""/healthz and /readyz (nodes/health.py): no sign-in, no HTTPS redirect, no
ALLOWED_HOSTS check; readiness names what fails and never an engine's own words."""

from __future__ import annotations

import ipaddress
import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from nodes import health
from nodes.models import Node, NodeHeartbeat
from operations.models import Operation
from tests.support import TEST_URI


@pytest.fixture
def health_calls(monkeypatch):
    """node_health as the readiness check calls it, answering `answers[node name]`."""
    answers: dict[str, tuple[bool, str]] = {}
    calls: list[str] = []

    def fake(node):
        calls.append(node.name)
        return answers.get(node.name, (True, "fine"))

    monkeypatch.setattr(health, "node_health", fake)
    return answers, calls


def ready(client, path="/readyz", **extra):
    response = client.get(path, **extra)
    assert response["Cache-Control"] == "no-store"
    return response.status_code, response.json()


def test_it_answers_liveness_without_the_database(db, client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_it_answers_probes_whatever_the_host_and_over_plain_http(client, settings, node):
    settings.SECURE_SSL_REDIRECT = True
    for path in ("/healthz", "/readyz"):
        assert client.get(path, HTTP_HOST="10.9.8.7:8000").status_code == 200, path
    # Anything else is still refused on that Host, and redirected to HTTPS.
    assert client.get("/accounts/login/", HTTP_HOST="10.9.8.7:8000").status_code == 400
    assert client.get("/accounts/login/").status_code == 301


def test_it_refuses_to_change_anything(db, client):
    assert client.post("/readyz").status_code == 405


def test_it_is_ready_when_database_broker_and_nodes_answer(client, node):
    status, body = ready(client)
    assert status == 200
    assert body["status"] == "ready"
    assert body["checks"]["database"] == {"ok": True}
    broker = "redis" if "redis" in settings.Q_CLUSTER else "orm"  # CI's PostgreSQL pass: Redis
    assert body["checks"]["broker"] == {"ok": True, "broker": broker}
    # The test driver's own health check ran (nodes.registry.node_health).
    assert body["checks"]["nodes"] == {"ok": True, "nodes": {node.name: {
        "ok": True, "engine": "libvirt", "last_contact": None, "checked": "engine health"}}}


def test_it_is_not_ready_when_a_node_is_unhealthy_and_does_not_say_why(client, node, health_calls):
    answers, _ = health_calls
    answers[node.name] = (False, "libvirt at qemu+ssh://root@hidden-host/system does not answer")
    Node.objects.create(name="second", uri=TEST_URI, public_host="203.0.113.11", vm_network="10.101.0.0/16")
    status, body = ready(client)
    assert status == 503
    assert body["status"] == "not ready" and body["failing"] == ["nodes"]
    nodes = body["checks"]["nodes"]["nodes"]
    assert nodes[node.name]["ok"] is False and nodes[node.name]["reason"] == "engine unhealthy"
    assert nodes["second"]["ok"] is True
    assert "hidden-host" not in str(body)


def test_it_leaves_the_nodes_out_when_asked(client, node, health_calls):
    answers, calls = health_calls
    answers[node.name] = (False, "down")
    status, body = ready(client, "/readyz?exclude=nodes")
    assert status == 200 and set(body["checks"]) == {"database", "broker"}
    assert calls == []


def test_it_ignores_disabled_nodes(client, node, health_calls):
    answers, calls = health_calls
    answers[node.name] = (False, "down")
    Node.objects.filter(pk=node.pk).update(enabled=False)
    status, body = ready(client)
    assert status == 200 and body["checks"]["nodes"] == {"ok": True, "nodes": {}}
    assert calls == []


def test_it_reuses_a_nodes_answer_for_a_few_seconds(client, settings, node, health_calls):
    _, calls = health_calls
    settings.TT_NODE_PROBE_CACHE = 60
    ready(client)
    ready(client)
    assert calls == [node.name]


def test_it_takes_a_recent_operation_as_the_engine_answering(client, node, template, alice, health_calls):
    from envs.models import Env
    from vms.models import Vm

    _, calls = health_calls
    now = timezone.now()
    env = Env.objects.create(owner=alice, name="e", start_at=now, end_at=now + timezone.timedelta(hours=1))
    vm = Vm.objects.create(env=env, node=node, template=template, name="v", cpu_num=1, mem_mb=64, disk_mb=20)
    Operation.objects.create(kind="vm_start", status="succeeded", env=env, vm=vm, started_at=now,
                             finished_at=now)
    status, body = ready(client)
    assert status == 200
    entry = body["checks"]["nodes"]["nodes"][node.name]
    assert entry["checked"] == "recent operation" and entry["last_contact"] == now.isoformat()
    assert calls == []


def test_it_bounds_a_node_that_hangs(client, settings, node, monkeypatch):
    settings.TT_NODE_PROBE_TIMEOUT = 1
    release = threading.Event()

    def hangs(node):
        release.wait(30)
        return True, "late"

    monkeypatch.setattr(health, "node_health", hangs)
    try:
        started = time.monotonic()
        status, body = ready(client)
        assert time.monotonic() - started < 5
        assert status == 503
        assert body["checks"]["nodes"]["nodes"][node.name]["reason"] == "no answer within 1 s"
    finally:
        release.set()


def test_it_is_not_ready_without_the_database(db, client, monkeypatch):
    def fails():
        raise OperationalError("could not connect to server at db.internal")

    monkeypatch.setattr(health, "check_database", fails)
    status, body = ready(client, "/readyz?exclude=nodes")
    assert status == 503 and body["failing"] == ["database"]
    assert body["checks"]["database"] == {"ok": False, "error": "OperationalError"}
    assert "db.internal" not in str(body)


@pytest.mark.parametrize(("pong", "ok"), [(True, True), (ConnectionError("refused"), False)])
def test_it_pings_redis_when_it_is_the_broker(db, client, settings, monkeypatch, pong, ok):
    import django_q.brokers

    class FakeRedis:
        def ping(self):
            if isinstance(pong, Exception):
                raise pong
            return pong

    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "redis": "redis://127.0.0.1:6379/0"}
    monkeypatch.setattr(django_q.brokers, "get_broker", lambda *a, **k: FakeRedis())
    status, body = ready(client, "/readyz?exclude=nodes")
    assert body["checks"]["broker"]["broker"] == "redis"
    assert body["checks"]["broker"]["ok"] is ok
    assert status == (200 if ok else 503)


def test_a_node_of_another_host_is_checked_by_its_heartbeat(client, node, health_calls):
    _, asked = health_calls
    b = Node.objects.create(name="b", uri="qemu+ssh://b.example/system", public_host="203.0.113.31",
                            vm_network="10.131.0.0/16", own_cluster=True)
    beat = NodeHeartbeat.objects.create(node=b, beat_at=timezone.now(), worker="b:1", ports_free=1,
                                        addresses_free=1, vms_running=0)
    status, body = ready(client)
    assert status == 200
    assert body["checks"]["nodes"]["nodes"]["b"] == {"ok": True, "engine": "libvirt", "last_contact": None,
                                                     "checked": "heartbeat"}
    assert "b" not in asked  # the web host never dials another host's engine
    NodeHeartbeat.objects.filter(pk=beat.pk).update(engine_ok=False, engine_note="libvirtd: no answer")
    status, body = ready(client)
    assert status == 503 and body["checks"]["nodes"]["nodes"]["b"]["reason"] == "engine unhealthy"
    NodeHeartbeat.objects.filter(pk=beat.pk).update(beat_at=timezone.now() - timedelta(hours=1))
    status, body = ready(client)
    assert body["checks"]["nodes"]["nodes"]["b"]["reason"] == "down: its cluster stopped beating"


# --- who sees the details ---------------------------------------------------------------------

OUTSIDE = {"REMOTE_ADDR": "198.18.0.5"}  # not in TT_METRICS_ALLOWED (loopback by default)


def test_an_anonymous_caller_from_outside_gets_the_status_only(client, node, health_calls):
    answers, _ = health_calls
    answers[node.name] = (False, "down")
    assert ready(client, **OUTSIDE) == (503, {"status": "not ready"})  # not which, nor why
    assert ready(client, "/readyz?exclude=nodes", **OUTSIDE) == (200, {"status": "ready"})


def test_an_allowed_address_sees_the_details(client, node, settings):
    settings.TT_METRICS_ALLOWED = (ipaddress.ip_network("198.18.0.0/15"),)
    status, body = ready(client, **OUTSIDE)
    assert status == 200
    assert body["checks"]["nodes"]["nodes"][node.name]["engine"] == "libvirt"


def test_staff_see_the_details_with_view_node_only(client, node, stan, olga):
    client.force_login(stan)  # staff, no permission: the status only
    assert ready(client, **OUTSIDE) == (200, {"status": "ready"})
    client.force_login(olga)  # an operator (nodes.view_node among the rest)
    status, body = ready(client, **OUTSIDE)
    assert status == 200 and node.name in body["checks"]["nodes"]["nodes"]
