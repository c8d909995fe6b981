"""/healthz and /readyz: for the proxy, an orchestrator or a monitor; no sign-in.

- /healthz (liveness): this process answers. It touches nothing else, so a
  database outage never gets a healthy web process restarted.
- /readyz (readiness): the database answers; the task broker answers (the ORM
  broker's table, or Redis' PING when TT_REDIS_URL is set); every enabled node
  is up. A node with a task cluster of its own (another host, nodes/fleet.py) is up
  while its heartbeat is fresh and says its engine answers: the web host need not
  reach its engine. Any other node counts as up when its engine finished an
  operation in the last TT_NODE_CONTACT_FRESH seconds, else when its engine's own
  health check (nodes.registry.node_health) passes, asked for at most
  TT_NODE_PROBE_TIMEOUT seconds and reused for TT_NODE_PROBE_CACHE seconds
  (ttportal.probes).
  200 when all pass, 503 naming those that fail. `?exclude=nodes` (or
  `database`, `broker`; repeatable or comma-separated) leaves a check out, as
  Kubernetes' own /readyz does: a load balancer that should keep the portal
  in service while one node is down asks `/readyz?exclude=nodes`.
  Anybody gets the status (200/503, `{"status": ...}`); the checks themselves (node
  names, engines, last contacts) only a caller /metrics lets in: an address in
  TT_METRICS_ALLOWED, or a signed-in staff session holding nodes.view_node.

Answered by a middleware before sessions, CSRF and the ALLOWED_HOSTS check (a
probe dials an address, not the site's name), and exempt from the HTTPS
redirect. Bodies say what failed, never why in detail: an engine's message may
name hosts and paths, so it goes to the log instead.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial
from importlib import import_module

from django.conf import settings
from django.contrib import auth
from django.db import connection
from django.db.models import Max
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.utils import timezone

from nodes import fleet
from nodes.models import Node
from nodes.registry import node_health
from operations.models import Operation
from ttportal import permissions, probes
from ttportal.proxy import client_address, in_networks

log = logging.getLogger(__name__)

CHECKS = ("database", "broker", "nodes")


def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "alive"})


def readyz(request: HttpRequest) -> HttpResponse:
    excluded = {name.strip() for value in request.GET.getlist("exclude") for name in value.split(",")}
    run = {"database": check_database, "broker": check_broker, "nodes": check_nodes}
    checks = {}
    for name in CHECKS:
        if name in excluded:
            continue
        try:
            checks[name] = run[name]()
        except Exception as exc:  # a check that cannot run has failed
            log.warning("readiness check %s failed: %s: %s", name, exc.__class__.__name__, exc)
            checks[name] = {"ok": False, "error": exc.__class__.__name__}
    failing = [name for name, check in checks.items() if not check["ok"]]
    body = {"status": "not ready" if failing else "ready"}
    if may_see_details(request):  # the fleet's names and state are not the public's
        body["checks"] = checks
        if failing:
            body["failing"] = failing
    response = JsonResponse(body, status=503 if failing else 200)
    # Each failure is logged above, once with its reason; not again per probe as a
    # server error by django.request.
    response._has_been_logged = True
    return response


def may_see_details(request: HttpRequest) -> bool:
    """As /metrics: an allowed address, or a staff session with nodes.view_node. This
    middleware runs before the session's, so the session is read here, only if needed."""
    if in_networks(client_address(request), settings.TT_METRICS_ALLOWED):
        return True
    if not request.COOKIES.get(settings.SESSION_COOKIE_NAME):
        return False
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(
        request.COOKIES[settings.SESSION_COOKIE_NAME])
    try:
        return permissions.may(auth.get_user(request), "node_view")
    except Exception:  # a session that cannot be read (database down): no details
        log.warning("readyz: could not read the caller's session", exc_info=True)
        return False


def check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True}


def check_broker() -> dict:
    from django_q.brokers import get_broker

    if "redis" not in settings.Q_CLUSTER:
        # The ORM broker's queue is a table of the database: read it.
        get_broker().queue_size()
        return {"ok": True, "broker": "orm"}
    # Redis can hang on a dead route: bounded like a node (a fresh PING each time).
    outcome = probes.ask(("broker", "ping"), lambda: get_broker().ping(), ttl=0)
    check = {"ok": outcome.ok and bool(outcome.value), "broker": "redis"}
    if not check["ok"]:
        check["reason"] = "no answer in time" if outcome.timed_out else "no answer"
    return check


def last_contacts(nodes: list[Node], now: datetime) -> dict[int, datetime]:
    """node id -> when its engine last finished an operation successfully (in the last
    day: older is no news): an operation that succeeded is the engine having answered."""
    rows = (
        Operation.objects.filter(status=Operation.Status.SUCCEEDED, vm__node__in=nodes,
                                 created_at__gte=now - timedelta(days=1), finished_at__isnull=False)
        .values("vm__node").annotate(last=Max("finished_at")).order_by()
    )
    return {row["vm__node"]: row["last"] for row in rows}


def _health(node: Node) -> tuple[bool, str]:
    healthy, message = node_health(node)
    if not healthy:
        log.warning("node %s: engine unhealthy: %s", node.name, message)
    return healthy, message


def check_nodes() -> dict:
    now = timezone.now()
    nodes = list(Node.objects.filter(enabled=True).select_related("heartbeat").order_by("name"))
    contacts = last_contacts(nodes, now)
    fresh = timedelta(seconds=settings.TT_NODE_CONTACT_FRESH)
    recent = {node.pk for node in nodes if node.pk in contacts and now - contacts[node.pk] <= fresh}
    beating = {node.pk for node in nodes if node.own_cluster}
    outcomes = probes.ask_many({("health", node.pk): partial(_health, node)
                                for node in nodes if node.pk not in recent | beating})
    found = {}
    for node in nodes:
        last = contacts.get(node.pk)
        entry = {"ok": True, "engine": node.kind, "last_contact": last.isoformat() if last else None}
        if node.pk in beating:
            entry["checked"] = "heartbeat"
            beat = getattr(node, "heartbeat", None)
            if fleet.state_of(node, now) == fleet.State.DOWN:
                entry.update(ok=False, reason="down: its cluster stopped beating")
            elif beat is not None and not beat.engine_ok:
                entry.update(ok=False, reason="engine unhealthy")
        elif node.pk in recent:
            entry["checked"] = "recent operation"
        else:
            entry["checked"] = "engine health"
            outcome = outcomes[("health", node.pk)]
            if outcome.timed_out:
                entry.update(ok=False, reason=f"no answer within {settings.TT_NODE_PROBE_TIMEOUT} s")
            elif not outcome.ok or not outcome.value[0]:
                entry.update(ok=False, reason="engine unhealthy")
        found[node.name] = entry
    return {"ok": all(entry["ok"] for entry in found.values()), "nodes": found}


class HealthChecks:
    """Middleware: answers /healthz and /readyz itself (see the module's docstring)."""

    VIEWS = {"/healthz": healthz, "/readyz": readyz}

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = self.VIEWS.get(request.path_info.rstrip("/") or "/")
        if view is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        response = view(request)
        response["Cache-Control"] = "no-store"
        return response
