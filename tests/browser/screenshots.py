"""Screenshots of every portal page, for a human to look at (not collected by pytest).

    .venv/bin/python tests/browser/screenshots.py [OUT_DIR]

Makes a throwaway database (TT_VAR_DIR in a temporary directory), fills it
through the services (tasks stay queued: no worker runs, no engine is called,
then a few rows are moved on by hand so every status shows), starts
`runserver` on a spare port and drives Chromium through the pages.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from vms.kinds import VmKind

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def spare_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed() -> None:
    """Users, a node, templates and Envs in every interesting state."""
    import django

    django.setup()
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import timezone

    from envs.models import Env
    from envs.services import env_create
    from nodes.models import Node
    from operations.models import Operation
    from vms.models import Snapshot, Vm, VmTemplate
    from vms.new_vms import NewVm

    call_command("migrate", verbosity=0)
    users = get_user_model().objects
    alice = users.create_user("alice", password="pw-alice")
    users.create_user("bob", password="pw-bob")
    users.create_user("olga", password="pw-olga", is_staff=True, is_superuser=True)
    Node.objects.create(name="lab-1", kind="libvirt", uri="test:///default", public_host="lab1.example.net",
                        vm_network="10.100.0.0/16", port_min=20000, port_max=20999)
    VmTemplate.objects.create(name="tt/busybox", path="busybox.qcow2", compatible_engines=["libvirt"],
                              size_mb=64, min_mem_mb=64, memo="BusyBox with sshd and a web server.")
    VmTemplate.objects.create(name="debian-12", path="debian12.qcow2", compatible_engines=["libvirt"],
                              size_mb=2048, min_cpu=1, min_mem_mb=512, memo="Debian 12 cloud image.")
    VmTemplate.objects.create(name="old-centos", path="c7.qcow2", compatible_engines=["libvirt"],
                              enabled=False, size_mb=8192, min_mem_mb=1024)

    def make(owner, name, vms, **kwargs) -> Env:
        op = env_create(owner=owner, by=owner, name=name, vms=vms, **kwargs)
        return op.env

    web = make(alice, "web-demo", [
        NewVm(name="frontend", template="tt/busybox", ports=[22, 80, 443]),
        NewVm(name="db", template="debian-12", mem_mb=1024, cpu_num=2, ports=[22, 5432]),
        NewVm(name="dns", template="tt/busybox", ports=["53/udp"]),
    ], lifetime=3 * 3600 + 1200)
    Operation.objects.filter(env=web).update(status=Operation.Status.SUCCEEDED, progress=100,
                                             started_at=timezone.now(), finished_at=timezone.now())
    Vm.objects.filter(env=web).update(status=Vm.Status.RUNNING)
    Vm.objects.filter(env=web, name="dns").update(status=Vm.Status.STOPPED)
    frontend = web.vms.get(name="frontend")
    frontend.net_blacklist = ["192.0.2.10"]
    frontend.save()
    Snapshot.objects.create(vm=frontend, name="clean-install", status=Snapshot.Status.READY)
    Snapshot.objects.create(vm=frontend, name="before-upgrade", status=Snapshot.Status.READY, life_time=86400,
                            expires_at=timezone.now() + timedelta(days=1))
    Operation.objects.create(env=web, vm=frontend, kind=VmKind.VM_STOP, target="web-demo/frontend",
                             status=Operation.Status.FAILED, progress=50, requested_by=alice,
                             error_code="stop_vm", error_message="the guest ignored ACPI shutdown for 30 s",
                             started_at=timezone.now(), finished_at=timezone.now())
    Operation.objects.create(env=web, vm=frontend, kind=VmKind.SNAPSHOT_CREATE,
                             target="web-demo/frontend@before-upgrade", status=Operation.Status.RUNNING,
                             progress=60, requested_by=alice, log="12:00:01 frontend: snapshotting disk\n",
                             started_at=timezone.now())

    ending = make(alice, "ci-run-42", [NewVm(name="runner", template="tt/busybox", ports=[22])],
                  lifetime=1500, deny_outgoing=True)
    Vm.objects.filter(env=ending).update(status=Vm.Status.RUNNING)
    Operation.objects.filter(env=ending).update(status=Operation.Status.SUCCEEDED, progress=100)
    # The cooldown shows on an Env managed a moment ago.
    Env.objects.filter(pk=ending.pk).update(last_mgmt_at=timezone.now())

    stopped = make(alice, "weekend", [NewVm(name=f"node{i}", template="tt/busybox") for i in range(4)],
                   lifetime=6 * 24 * 3600)
    Vm.objects.filter(env=stopped).update(status=Vm.Status.STOPPED)
    Env.objects.filter(pk=stopped.pk).update(is_stopped=True)
    Operation.objects.filter(env=stopped).update(status=Operation.Status.SUCCEEDED, progress=100)
    bob = users.get(username="bob")
    make(bob, "bobs-lab", [NewVm(name="box", template="tt/busybox", ports=[8080])])


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="tt-shots-"))
    out.mkdir(parents=True, exist_ok=True)
    var = tempfile.mkdtemp(prefix="tt-var-")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TT_")},
           "TT_VAR_DIR": var, "TT_MGMT_COOLDOWN": "60",
           # DEBUG on: with it off the portal wants HTTPS (secure cookies, a redirect) and
           # collected static files, which this plain-HTTP runserver does not give.
           "TT_DEBUG": "1", "TT_SECRET_KEY": "screenshots-only-not-secret",
           "DJANGO_SETTINGS_MODULE": "ttportal.settings"}
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    seed()
    port = spare_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "manage.py", "runserver", "--noreload", "--insecure", f"127.0.0.1:{port}"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    server = subprocess.Popen(command, cwd=ROOT, env=env, **quiet)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/accounts/login/", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        shoot(base, out)
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(out)


def run_in_thread(func, *args) -> None:
    """ORM work while Playwright runs: its event loop makes Django refuse it on this thread."""
    import threading

    from django.db import connection

    def work() -> None:
        try:
            func(*args)
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def finish_running(env_id: int) -> None:
    """What a worker would write when the running snapshot finishes."""
    from django.utils import timezone

    from operations.models import Operation
    from vms.models import Vm

    Operation.objects.filter(env_id=env_id, status=Operation.Status.RUNNING).update(
        status=Operation.Status.SUCCEEDED, progress=100, finished_at=timezone.now()
    )
    Vm.objects.filter(env_id=env_id, name="frontend").update(status=Vm.Status.STOPPED)


def shoot(base: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    from envs.models import Env

    # Read before Playwright starts: the ORM refuses to run inside its event loop.
    web = Env.objects.get(name="web-demo")
    ending = Env.objects.get(name="ci-run-42")
    bobs = Env.objects.get(name="bobs-lab")
    frontend_pk = web.vms.get(name="frontend").pk
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 768})

        def snap(name: str) -> None:
            page.screenshot(path=str(out / f"{name}.png"), full_page=True)

        def sign_in(user: str) -> None:
            page.goto(base + "/accounts/login/")
            page.fill("#id_username", user)
            page.fill("#id_password", f"pw-{user}")
            page.click("button[type=submit]")
            page.wait_for_url(base + "/")

        page.goto(base + "/")
        snap("01-login")
        sign_in("alice")
        snap("02-my-envs")
        page.goto(f"{base}/envs/{web.pk}/")
        snap("03-env-page")
        page.goto(f"{base}/vms/{frontend_pk}/")
        snap("03b-vm-page")
        page.goto(f"{base}/envs/{web.pk}/vms/new/")
        snap("03c-add-vm")
        page.goto(f"{base}/envs/{ending.pk}/")
        snap("04-env-ending-cooldown")
        page.goto(base + "/envs/new/")
        snap("05-create")
        page.fill("#id_name", "Bad Name")
        page.fill("#id_lifetime_hours", "999")
        page.select_option("#id_vms-0-template", label="tt/busybox (QEMU/KVM (libvirt))")
        page.fill("#id_vms-0-name", "web")
        page.fill("#id_vms-0-mem_mb", "16")
        page.fill("#id_vms-0-ports", "22, 80")
        page.click("text=Create Env")
        page.wait_for_load_state()
        snap("06-create-errors")
        page.fill("#id_name", "fresh")
        page.fill("#id_lifetime_hours", "2")
        page.fill("#id_vms-0-mem_mb", "128")
        page.click("text=Create Env")
        page.wait_for_load_state()
        snap("07-created")
        page.goto(base + "/templates/")
        snap("08-templates")
        page.goto(f"{base}/envs/{bobs.pk}/")
        snap("09-not-yours-404")
        # Live part: the operations partial polls while the snapshot runs; once it is
        # done, polling stops and the VMs are refreshed in place.
        page.goto(f"{base}/envs/{web.pk}/")
        with page.expect_request(lambda r: "/operations/" in r.url, timeout=5000):
            pass
        run_in_thread(finish_running, web.pk)
        page.wait_for_selector("#operations:not([hx-get])", timeout=10000)
        page.wait_for_selector(f"#vm-{frontend_pk} .status-stopped", timeout=10000)
        snap("10-after-live-update")
        page.click("details.danger summary")
        snap("11-destroy-confirm")
        page.click("form.extend button")
        page.wait_for_load_state()
        snap("12-after-action")
        page.context.clear_cookies()
        sign_in("olga")
        snap("13-staff-all-envs")
        # Without JavaScript: plain forms, no copy buttons, the cooldown as text.
        nojs = browser.new_context(java_script_enabled=False, viewport={"width": 1366, "height": 768})
        page = nojs.new_page()
        sign_in("alice")
        page.goto(f"{base}/envs/{ending.pk}/")
        snap("14-no-javascript")
        browser.close()


if __name__ == "__main__":
    main()
