"""/metrics: the portal's state in Prometheus' text format, read from the database
at scrape time.

Several web processes answer scrapes in turn, so nothing is counted in memory per
request: each app registers a collector for what it owns (its AppConfig.ready():
nodes/metrics.py, vms/metrics.py, envs/metrics.py, the operations' collector), and
each asks the database the same constant number of queries whatever the number of
VMs, nodes and operations. The kernel knows none of them: it only serves the
registry.

Who may read it: a staff user's session, or a client whose address is in
TT_METRICS_ALLOWED (as the trusted proxies report it: ttportal.proxy). Anyone
else gets 403.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client.core import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ttportal import permissions
from ttportal.proxy import client_address, in_networks

MIB = 1024 * 1024

REGISTRY = CollectorRegistry(auto_describe=False)


def register(collector) -> None:
    """Adds an app's collector (an object with `collect()` yielding metric families).
    Called once per process from the app's AppConfig.ready()."""
    REGISTRY.register(collector)


def may_read(request: HttpRequest) -> bool:
    if permissions.may(request.user, "node_view"):
        return True
    return in_networks(client_address(request), settings.TT_METRICS_ALLOWED)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not may_read(request):
        return HttpResponse("metrics: staff only, or from an address in TT_METRICS_ALLOWED\n",
                            status=403, content_type="text/plain; charset=utf-8")
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(encoder(REGISTRY), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
