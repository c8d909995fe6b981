"""The portal in a real browser: Playwright drives Debian's Chromium against
pytest-django's live server (a real HTTP server on the test database).

One user's whole flow, as the issue words it: sign in, create an Env with one
VM, watch it reach running without reloading, take a snapshot and forward one
more port on the VM's page, add a second VM, extend the lifetime, destroy the
Env by typing its name. Every page is saved to
artifacts/screenshots/ for a human to look at. With TT_SCREENSHOTS_DIR set
(`TT_SCREENSHOTS_DIR=docs/img`), the pages the documentation shows are saved
there too, under the names the docs use (DOC_SHOTS): the docs' pictures of the
portal are taken by this test, never by hand.

Tasks go through django-q2's own code, two ways:
- the create is queued in django-q2's ORM broker (sync off, as in production)
  and the test then plays the worker (django-q2's worker + monitor on the
  dequeued package), so the page first shows the VM "creating" and has to
  notice "running" on its own: the operations partial polls (htmx) and,
  once nothing runs, refreshes the VMs in place;
- the later actions run with Q_CLUSTER["sync"] (tests/conftest.py's
  `_sync_tasks`): under live_server transactions commit for real, so the
  service's on_commit enqueue fires and the task runs inline in the request.

These tests fail (never skip) when Playwright or Chromium is missing: the
import below is a collection error, the launch an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from playwright.sync_api import Page, expect, sync_playwright

from envs.models import Env
from operations.models import Operation
from vms.models import Snapshot, Vm, VmTemplate

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
# The screenshots the documentation shows (docs/img/): this test's name for a page -> the docs' file.
DOC_SHOTS = {
    "05-env-running": "env-page.png",
    "06-vm-snapshot-taken": "vm-page.png",
    "09b-my-envs": "my-envs.png",
    "03-new-env-form": "new-env.png",
    "17-admin": "admin.png",
}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture
def server(django_db_setup, live_server):
    # Asks for the test database first so that it is torn down after the
    # (session-wide) live server: else PostgreSQL refuses to drop a database
    # the server's threads still hold a connection to.
    return live_server


@pytest.fixture
def page(monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the ORM refuses to
    # run under one unless told that this (single-threaded) test body is fine.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium (tt.sh installs it)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.set_default_timeout(15_000)
        yield page
        browser.close()
        # The test body's ORM calls ran while Playwright's event loop counted as running,
        # so asgiref kept their connection in context-local storage, which only code under
        # that loop sees: close it here, or dropping the PostgreSQL test database at the
        # end finds it "being accessed by other users".
        connections.close_all()


def snap(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    docs_dir = os.environ.get("TT_SCREENSHOTS_DIR")
    if docs_dir and name in DOC_SHOTS:
        Path(docs_dir).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(docs_dir) / DOC_SHOTS[name]), full_page=True)


def run_queued_tasks() -> int:
    """Be the django-q2 cluster for a moment: take every queued package from the
    broker and run it through django-q2's own worker and monitor."""
    from django_q.brokers import get_broker
    from django_q.tasks import _sync

    broker = get_broker()
    done = 0
    for _ in range(50):
        packages = broker.dequeue()
        if not packages:
            if done:
                return done
            continue
        for ack_id, payload in packages:
            _sync(payload)
            broker.acknowledge(ack_id)
            done += 1
    return done


def test_it_runs_an_env_from_sign_in_to_destroy(server, page, alice, template, monkeypatch):
    base = server.url

    # Sign in.
    page.goto(base + "/")
    expect(page).to_have_url(f"{base}/accounts/login/?next=/")
    snap(page, "01-sign-in")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click("button[type=submit]")
    expect(page).to_have_url(base + "/")
    expect(page.locator("h1")).to_have_text("My Envs")
    snap(page, "02-my-envs-empty")

    # Create an Env with one VM; its task waits in the broker as it would for a worker.
    # Choosing the template offers its default ports.
    monkeypatch.setitem(settings.Q_CLUSTER, "sync", False)
    VmTemplate.objects.filter(pk=template.pk).update(default_ports=["80"])
    page.click("text=New Env")
    page.fill("#id_name", "browser-demo")
    page.fill("#id_lifetime_hours", "2")
    page.select_option("#id_vms-0-template", value=str(template.pk))
    expect(page.locator("#id_vms-0-ports")).to_have_value("80")
    page.fill("#id_vms-0-name", "web")
    page.fill("#id_vms-0-mem_mb", "128")
    page.fill("#id_vms-0-ports", "22, 80")
    snap(page, "03-new-env-form")
    page.click("text=Create Env")
    env = Env.objects.get(name="browser-demo")
    vm = env.vms.get()
    expect(page).to_have_url(f"{base}/envs/{env.pk}/")
    status = page.locator(f"#vm-{vm.pk} .status").first
    expect(status).to_have_text("creating")
    assert Operation.objects.get(env=env).status == Operation.Status.QUEUED
    snap(page, "04-env-creating")

    # Reach running without reloading: mark this document, poll, run the task.
    page.evaluate("window.ttSameDocument = true")
    with page.expect_response(lambda r: f"/envs/{env.pk}/operations/" in r.url):
        pass  # the partial is polling
    assert run_queued_tasks() == 1
    vm.refresh_from_db()
    assert vm.status == Vm.Status.RUNNING
    expect(status).to_have_text("running")
    expect(page.locator("#operations .status-op-succeeded")).to_have_count(1)
    expect(page.locator("#operations")).not_to_have_attribute("hx-get", f"/envs/{env.pk}/operations/")
    assert page.evaluate("window.ttSameDocument") is True, "the page was reloaded"
    ssh_line = f"ssh -p {vm.port_mappings.get(inner_port=22).public_port} tt@{vm.node.public_host}"
    expect(page.locator(f"#vm-{vm.pk} li.ssh code")).to_have_text(ssh_line)
    snap(page, "05-env-running")

    # From here tasks run inline: the on_commit enqueue fires under live_server.
    monkeypatch.setitem(settings.Q_CLUSTER, "sync", True)

    # Open the VM's page and take a snapshot there.
    page.click(f"#vm-{vm.pk} >> text=Manage")
    expect(page).to_have_url(f"{base}/vms/{vm.pk}/")
    expect(page.locator("#ssh code")).to_have_text(ssh_line)
    page.fill("#snap-name", "clean")
    page.click("text=Take snapshot")
    expect(page.locator(".msg-success")).to_contain_text("Taking snapshot clean of web")
    expect(page).to_have_url(f"{base}/vms/{vm.pk}/")
    snapshot = Snapshot.objects.get(vm=vm, name="clean")
    assert snapshot.status == Snapshot.Status.READY
    row = page.locator("#snapshots tr", has_text="clean")
    expect(row.locator(".status")).to_have_text("ready")
    expect(page.locator("h1 .status").first).to_have_text("running")  # the power state is put back
    snap(page, "06-vm-snapshot-taken")

    # Forward one more port; the kept ones keep their public port.
    kept = vm.port_mappings.get(inner_port=22).public_port
    page.fill("#ports-field", "22, 80, 8080")
    page.click("text=Save ports")
    expect(page.locator(".msg-success")).to_contain_text("Updating the forwarded ports of web")
    expect(page.locator("#ports .portmap li")).to_have_count(3)
    assert vm.port_mappings.get(inner_port=22).public_port == kept
    snap(page, "07-vm-ports")

    # Back on the Env page, add a second VM.
    page.click(f".crumbs >> text={env.name}")
    page.click("text=Add VM")
    page.fill("#id_name", "db")
    page.select_option("#id_template", value=str(template.pk))
    page.fill("#id_mem_mb", "128")
    snap(page, "08-add-vm-form")
    page.click("button:has-text('Add VM')")
    expect(page).to_have_url(f"{base}/envs/{env.pk}/")
    expect(page.locator(".msg-success")).to_contain_text("Adding db to browser-demo")
    db = env.vms.get(name="db")
    expect(page.locator(f"#vm-{db.pk} .status").first).to_have_text("running")
    expect(page.locator(f"#vm-{vm.pk} >> a[href='/vms/{vm.pk}/#snapshots']")).to_have_text("1")
    snap(page, "09-env-two-vms")

    # My Envs lists it with both VMs running.
    page.click("nav >> text=My Envs")
    expect(page).to_have_url(base + "/")
    expect(page.locator("body")).to_contain_text("browser-demo")
    snap(page, "09b-my-envs")
    page.click("text=browser-demo")
    expect(page).to_have_url(f"{base}/envs/{env.pk}/")

    # Extend the lifetime by an hour.
    end_before = env.end_at
    page.fill("#extend-hours", "1")
    page.click("form.extend button")
    expect(page.locator(".msg-success")).to_contain_text("browser-demo extended by 1 h")
    env.refresh_from_db()
    assert (env.end_at - end_before).total_seconds() == pytest.approx(3600, abs=5)
    snap(page, "10-extended")

    # Destroy the Env, typing its name to confirm.
    page.click(".env-actions details.danger summary")
    page.fill("#confirm-name", "browser-demo")
    snap(page, "11-destroy-confirm")
    page.click(".env-actions details.danger button[type=submit]")
    expect(page.locator(".msg-success")).to_contain_text("Destroying browser-demo")
    env.refresh_from_db()
    assert env.status == Env.Status.DESTROYED
    expect(page.locator("h1 .status").first).to_have_text("destroyed")
    snap(page, "12-destroyed")
    assert set(Operation.objects.filter(env=env).values_list("status", flat=True)) == {
        Operation.Status.SUCCEEDED
    }

    # The list no longer shows it.
    page.click("text=My Envs")
    expect(page.locator("body")).not_to_contain_text("browser-demo")
    snap(page, "13-my-envs-after")


def test_it_creates_and_revokes_an_api_token(server, page, alice):
    from accounts.models import ApiToken

    base = server.url
    page.goto(base + "/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click("button[type=submit]")
    page.click("nav >> text=API tokens")
    expect(page).to_have_url(base + "/tokens/")
    page.fill("#id_name", "ci pipeline")
    page.fill("#id_expires_in_days", "7")
    page.click("text=Create token")
    secret = page.locator("#token-secret").inner_text()
    assert secret.startswith("ttp_")
    snap(page, "14-token-created")
    page.goto(base + "/tokens/")
    expect(page.locator("body")).not_to_contain_text(secret)
    expect(page.locator("table.tokens")).to_contain_text("ci pipeline")
    snap(page, "15-tokens")
    page.click("text=Revoke")
    expect(page.locator(".msg-success")).to_contain_text("Revoked the token ci pipeline")
    assert not ApiToken.objects.exists()
    snap(page, "16-token-revoked")


def test_staff_reach_the_admin(server, page, olga):
    base = server.url
    page.goto(base + "/admin/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", "pw-olga")
    page.click("input[type=submit]")
    expect(page).to_have_url(base + "/admin/")
    expect(page.locator("#content")).to_contain_text("Envs")
    snap(page, "17-admin")


def test_it_can_find_chromium():
    # Stated on its own so a machine without the package fails with a clear message.
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: apt-get install chromium"
