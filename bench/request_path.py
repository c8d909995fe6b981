"""How far one request travels: the project files and apps `POST /api/envs/` runs through,
from the API view to the engine and back, traced as it runs.

    .venv/bin/python bench/request_path.py [--list]

It makes a throw-away SQLite database, a node on libvirt's in-process test driver (boots
nothing) and one template, then posts an Env of one VM through the real API with the
task run inline (as the unit tests run it), and records every function of the project
that runs, by file (sys.setprofile, in the threads it starts too). Prints
`env_create: N files in M apps (view to engine)`; with --list, the files by app in the
order they were first entered. Settings, URLconfs, middleware and the apps' start-up are
not counted: they run for every request, around the view.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SKIPPED_DIRS = ("tests", "bench", "migrations", ".venv")
# What runs for every request and is not the request's own path.
SKIPPED_FILES = {"ttportal/settings.py", "ttportal/config.py", "ttportal/urls.py",
                 "ttportal/api_urls.py", "ttportal/portal_urls.py"}


def setup_django(db_dir: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "ttportal.settings"
    os.environ["TT_DATABASE_URL"] = f"sqlite:///{db_dir}/path.sqlite3"
    os.environ.setdefault("TT_LOG_LEVEL", "WARNING")
    import django
    from django.conf import settings

    django.setup()
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    settings.TT_MGMT_COOLDOWN = 0
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def make_world():
    """A user with a token, a test-driver node and a template on it."""
    import libvirt
    from django.apps import apps
    from django.contrib.auth import get_user_model

    from engines.libvirt.connection import get_connection

    node_model = apps.get_model("nodes" if apps.is_installed("nodes") else "engines", "Node")
    registry = __import__("nodes.registry" if apps.is_installed("nodes") else "engines.registry",
                          fromlist=["get_engine"])
    from vms.models import VmTemplate

    user = get_user_model().objects.create_user("walker", password="x-walker-password")
    node = node_model.objects.create(
        name="path-test", kind="libvirt", uri="test:///default", public_host="203.0.113.10",
        vm_network="10.100.0.0/16", port_min=20000, port_max=20999)
    registry.get_engine(node)
    pool = get_connection("test:///default").storagePoolLookupByName("tt-pool")
    try:
        path = pool.storageVolLookupByName("path-template.qcow2").path()
    except libvirt.libvirtError:
        path = pool.createXML("<volume><name>path-template.qcow2</name><capacity unit='M'>20</capacity>"
                              "<target><format type='qcow2'/></target></volume>", 0).path()
    VmTemplate.objects.create(name="tt/busybox", path=path, compatible_engines=["libvirt"],
                              size_mb=20, min_mem_mb=64)
    return user


def trace_request(user) -> list[str]:
    """The project files entered while the API creates one Env, in first-entered order."""
    from django.test import Client
    from django.test.utils import CaptureQueriesContext  # noqa: F401  (warms Django's own imports)

    client = Client()
    client.force_login(user)
    body = {"name": "walk", "vms": [{"name": "web", "template": "tt/busybox", "ports": [80]}]}
    seen: dict[str, None] = {}
    root = str(ROOT) + os.sep
    from django.conf import settings

    # Middleware runs for every request, before and after the view: not the request's path.
    middleware = {name.rpartition(".")[0].replace(".", os.sep) + ".py" for name in settings.MIDDLEWARE}

    def profile(frame, event, arg):
        if event != "call":
            return
        filename = frame.f_code.co_filename
        if filename.startswith(root):
            relative = filename[len(root):]
            if relative.split(os.sep)[0] not in SKIPPED_DIRS and "migrations" not in relative \
                    and relative not in SKIPPED_FILES and relative not in middleware:
                seen.setdefault(relative, None)

    client.get("/api/envs/")  # warm: the first request loads what every request loads
    # Threads too: an operation's VMs do their engine work in threads of their own (vms/together.py).
    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        response = client.post("/api/envs/", body, content_type="application/json")
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    assert response.status_code == 202, response.content
    from django.apps import apps

    operation = apps.get_model("operations" if apps.is_installed("operations") else "envs", "Operation")
    op = operation.objects.get(pk=response.json()["id"])
    assert op.status == "succeeded", (op.status, op.error_message)
    return list(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the files, by app")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tt-path-") as db_dir:
        setup_django(db_dir)
        files = trace_request(make_world())
    apps_crossed: dict[str, list[str]] = {}
    for name in files:
        apps_crossed.setdefault(name.split(os.sep)[0], []).append(name)
    if args.list:
        for app, names in apps_crossed.items():
            print(f"{app} ({len(names)}): {', '.join(names)}")
    print(f"env_create: {len(files)} files in {len(apps_crossed)} apps (view to engine)")


if __name__ == "__main__":
    main()
