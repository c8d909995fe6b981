"""audit_cost: what the audit log adds to env_create and to the list pages.

A throwaway SQLite site (a node on libvirt's test driver, nothing boots: tasks go to the
broker and are not run), one user with an API token. Then, alternating request by
request so load and drift touch both sides alike:

- env_create through the API (POST /api/envs/, one VM), N times with the audit on and N
  times off (TT_AUDIT_ENABLED, read at each call: off, no event is written); each new Env
  is destroyed again untimed (its rows marked destroyed), so the node never fills;
- the list pages (the portal's My Envs and the API's Env list, 20 Envs), N times each with
  the audit's middleware in the chain and N times without it (a client whose handler was
  built without it): what every request pays for the audit, since a list records nothing.

    .venv/bin/python bench/audit_cost.py [--n 200]

Prints the medians and p95s, then one line:

    audit_cost: env_create p95 <off> ms -> <on> ms (+x %), list p95 <off> ms -> <on> ms (+y %)

Target (issue 28): each <= 5 % added. Run it alone (flock /tmp/tt-bench.lock), load < 1.5.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import _common as c

TARGET_PERCENT = 5.0
LIST_ENVS = 20


def main() -> None:
    parser = c.arg_parser(__doc__)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    var_dir = tempfile.mkdtemp(prefix="tt-bench-audit-")
    try:
        os.environ["TT_DEBUG"] = "0"
        os.environ.setdefault("TT_SECRET_KEY", "bench-" + "x" * 60)
        os.environ["TT_ALLOWED_HOSTS"] = "testserver"
        os.environ["TT_SSL_REDIRECT"] = "0"
        for rate in ("TT_RATE_EXTEND", "TT_RATE_PEER", "TT_RATE_TOKEN_CREATE"):
            os.environ[rate] = "off"
        c.setup_django(var_dir, inline_tasks=False)
        from django.core.management import call_command

        # TT_DEBUG=0 serves only collected static files, as in production (list_latency too).
        call_command("collectstatic", interactive=False, verbosity=0)
        run(args.n)
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


def _site():
    from django.contrib.auth import get_user_model

    from accounts.services import token_create
    from tests.conftest import make_node, make_template

    template = make_template(make_node())
    user = get_user_model().objects.create_user("bench", password="pw-bench-audit")
    _, secret = token_create(user=user, name="bench")
    return template, user, secret


def _destroy(env_id: int) -> None:
    """Untimed: the Env and its VMs marked destroyed (their ports given back), as if a
    destroy had run, so the node never fills and the next create places as the first."""
    from django.utils import timezone

    from envs.models import Env
    from vms.models import PortMapping, Vm

    PortMapping.objects.filter(vm__env_id=env_id).delete()
    Vm.objects.filter(env_id=env_id).update(status=Vm.Status.DESTROYED, destroyed_at=timezone.now())
    Env.objects.filter(pk=env_id).update(status=Env.Status.DESTROYED, destroyed_at=timezone.now())


def run(n: int) -> None:
    from django.conf import settings
    from django.test import Client, override_settings
    from rest_framework.test import APIClient

    from audit.models import AuditEvent

    c.header(f"audit_cost: env_create and the list pages, audit on vs off, N={n} each, SQLite")
    print(f"   load {os.getloadavg()[0]:.2f}")
    template, user, secret = _site()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    body = {"vms": [{"name": "a", "template": template.name}], "lifetime": 3600}

    samples: dict[str, list[float]] = {"create on": [], "create off": []}
    for i in range(n * 2 + 10):
        on = i % 2 == 0
        settings.TT_AUDIT_ENABLED = on
        started = time.perf_counter()
        response = api.post("/api/envs/", {**body, "name": f"e{i}"}, format="json")
        took = time.perf_counter() - started
        assert response.status_code == 202, response.content
        _destroy(response.json()["env"])
        if i >= 10:  # the first few warm caches up
            samples["create on" if on else "create off"].append(took)
    settings.TT_AUDIT_ENABLED = True
    events = AuditEvent.objects.filter(verb="env.create").count()
    assert events == n + 5, events  # one per create with the audit on, none with it off

    for i in range(LIST_ENVS):  # the lists' rows: live Envs of the user
        api.post("/api/envs/", {**body, "name": f"live{i}"}, format="json")
    without = [m for m in settings.MIDDLEWARE if m != "audit.context.AuditContext"]
    portal_on, portal_off = Client(), Client()
    portal_on.force_login(user)
    with override_settings(MIDDLEWARE=without):
        portal_off.force_login(user)
        portal_off.get("/")  # its handler's middleware chain is built now, without the audit's
        api_off = APIClient()
        api_off.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
        api_off.get("/api/envs/")
    pages = {"My Envs": ("/", portal_on, portal_off), "API Env list": ("/api/envs/", api, api_off)}
    for name in pages:
        samples[f"{name} on"], samples[f"{name} off"] = [], []
    for i in range(n + 10):
        for name, (path, client_on, client_off) in pages.items():
            for on, client in ((True, client_on), (False, client_off)):
                started = time.perf_counter()
                response = client.get(path)
                took = time.perf_counter() - started
                assert response.status_code == 200, (path, response.status_code)
                if i >= 10:
                    samples[f"{name} {'on' if on else 'off'}"].append(took)

    for label, values in samples.items():
        print("  " + c.summary(label, values))
    create = (c.p95(samples["create off"]), c.p95(samples["create on"]))
    lists_off = [v for name in pages for v in samples[f"{name} off"]]
    lists_on = [v for name in pages for v in samples[f"{name} on"]]
    lists = (c.p95(lists_off), c.p95(lists_on))
    print(f"   load {os.getloadavg()[0]:.2f}")

    def change(pair):
        return (pair[1] - pair[0]) / pair[0] * 100

    verdict = "ok" if change(create) <= TARGET_PERCENT and change(lists) <= TARGET_PERCENT else "MISSED"
    print(f"audit_cost: env_create p95 {create[0] * 1000:.2f} ms -> {create[1] * 1000:.2f} ms "
          f"({change(create):+.1f} %), list p95 {lists[0] * 1000:.2f} ms -> {lists[1] * 1000:.2f} ms "
          f"({change(lists):+.1f} %) (target <= +{TARGET_PERCENT:.0f} %): {verdict}")


if __name__ == "__main__":
    sys.exit(main())
