"""The portal's VM and snapshot actions, the port map and the templates page."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from operations.models import Operation
from tests.support import RETRY, lose_a_race, take_snapshot
from ttportal import limits
from vms import services
from vms.kinds import VmKind
from vms.models import Snapshot, Vm, VmTemplate
from vms.new_vms import NewVm

VM_ACTIONS = ["vms:start", "vms:stop", "vms:destroy", "vms:blacklist", "vms:ports", "vms:snapshot_create"]
SNAPSHOT_ACTIONS = ["vms:snapshot_apply", "vms:snapshot_destroy"]


@pytest.fixture
def vm(alice, make_env, template):
    env = make_env(alice, vms=[NewVm(name="web", template=template.name, ports=[22, "53/udp"])])
    return env.vms.get()


@pytest.fixture
def snapshot(vm, run_tasks):
    return take_snapshot(vm, run_tasks, "before")


def flash(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def env_page(vm: Vm) -> str:
    return reverse("envs:detail", args=[vm.env_id])


# --- the Env page and the VM page show each VM -----------------------------------------


def vm_page(vm: Vm) -> str:
    return reverse("vms:detail", args=[vm.pk])


@pytest.mark.parametrize("page", [env_page, vm_page])
def test_it_shows_the_port_map_as_copyable_lines(client, alice, vm, page):
    client.force_login(alice)
    body = client.get(page(vm)).content.decode()
    for mapping in vm.port_mappings.all():
        suffix = "/udp" if mapping.protocol == "udp" else ""
        assert f"<code class=\"copy-src\">203.0.113.10:{mapping.public_port}</code>" in body
        assert f"<code>{mapping.inner_port}{suffix}</code>" in body
    # Each line has a copy button (portal.js copies the line's .copy-src), and so has the
    # ssh line of port 22.
    ssh = f"ssh -p {vm.port_mappings.get(inner_port=22).public_port} tt@203.0.113.10"
    assert f'<code class="copy-src">{ssh}</code>' in body
    assert body.count('class="btn btn-xs copy"') == vm.port_mappings.count() + 1 == 3
    assert "→" in body
    assert vm.ip in body and "running" in body


def test_it_links_each_vm_row_to_its_page_with_its_snapshot_count(client, alice, vm, snapshot):
    client.force_login(alice)
    body = client.get(env_page(vm)).content.decode()
    assert f'href="{vm_page(vm)}"' in body
    assert f'<a href="{vm_page(vm)}#snapshots">1</a>' in body


def test_it_shows_snapshots_with_their_life_time(client, alice, vm, run_tasks):
    take_snapshot(vm, run_tasks, "kept")
    take_snapshot(vm, run_tasks, "short", life_time=3600)
    client.force_login(alice)
    body = client.get(vm_page(vm)).content.decode()
    assert "kept" in body and "short" in body
    short = Snapshot.objects.get(name="short")
    assert f"{short.expires_at:%m-%d %H:%M}" in body
    for snap in Snapshot.objects.all():  # each ready snapshot can be applied and deleted from here
        assert reverse("vms:snapshot_apply", args=[snap.pk]) in body
        assert reverse("vms:snapshot_destroy", args=[snap.pk]) in body


def test_it_shows_the_vm_page_with_its_forms(client, alice, vm):
    vm.net_blacklist = ["192.0.2.9"]
    vm.save(update_fields=["net_blacklist"])
    client.force_login(alice)
    response = client.get(vm_page(vm))
    assert response.status_code == 200
    body = response.content.decode()
    assert vm.mac in body and "tt/busybox" in body
    assert 'name="ports" value="22, 53/udp"' in body  # the port editor holds what is forwarded now
    assert "192.0.2.9</textarea>" in body
    for action in ("vms:start", "vms:stop", "vms:destroy", "vms:snapshot_create"):
        if action == "vms:start":  # running: no start button
            assert reverse(action, args=[vm.pk]) not in body
        else:
            assert reverse(action, args=[vm.pk]) in body


def test_it_lists_only_this_vms_and_env_wide_operations_on_the_vm_page(client, alice, make_env, template):
    env = make_env(alice, vms=2)
    first, second = env.vms.order_by("name")
    client.force_login(alice)
    client.post(reverse("vms:blacklist", args=[second.pk]), {"addresses": "192.0.2.1"})
    body = client.get(vm_page(first)).content.decode()
    assert f"<code>{env.name}</code>" in body  # the env_create operation acts on every VM
    assert f"{env.name}/{second.name}" not in body
    assert f"{env.name}/{second.name}" in client.get(vm_page(second)).content.decode()


# --- ports ----------------------------------------------------------------------------------


def test_it_changes_the_forwarded_ports_and_keeps_the_kept_ones(client, alice, vm, run_tasks):
    kept = vm.port_mappings.get(inner_port=22).public_port
    client.force_login(alice)
    with run_tasks():
        response = client.post(reverse("vms:ports", args=[vm.pk]), {"ports": "22, 8080", "next": vm_page(vm)})
    assert response.status_code == 302 and response["Location"] == vm_page(vm)
    assert Operation.objects.get(vm=vm, kind=VmKind.VM_SET_PORTS).status == Operation.Status.SUCCEEDED
    assert sorted(vm.port_mappings.values_list("inner_port", flat=True)) == [22, 8080]
    assert vm.port_mappings.get(inner_port=22).public_port == kept


def test_it_reports_a_bad_port_and_changes_nothing(client, alice, vm):
    before = list(vm.port_mappings.values_list("protocol", "inner_port", "public_port"))
    client.force_login(alice)
    response = client.post(reverse("vms:ports", args=[vm.pk]), {"ports": "22, 70000"}, follow=True)
    assert flash(response) == ["ports[1]: must be an integer between 1 and 65535"]
    assert list(vm.port_mappings.values_list("protocol", "inner_port", "public_port")) == before
    assert not Operation.objects.filter(kind=VmKind.VM_SET_PORTS).exists()


def test_it_takes_the_most_ports_and_refuses_one_more(client, alice, vm, node, run_tasks):
    node.port_max = node.port_min + 2 * limits.ports_max()
    node.save()
    client.force_login(alice)
    too_many = ", ".join(str(p) for p in range(1, limits.ports_max() + 2))
    response = client.post(reverse("vms:ports", args=[vm.pk]), {"ports": too_many}, follow=True)
    assert flash(response) == [f"ports: {limits.ports_rule()}"]
    assert not Operation.objects.filter(kind=VmKind.VM_SET_PORTS).exists()
    with run_tasks():
        client.post(reverse("vms:ports", args=[vm.pk]), {"ports": too_many.rsplit(",", 1)[0]})
    assert vm.port_mappings.count() == limits.ports_max()


# --- actions ------------------------------------------------------------------------------


def test_it_stops_and_starts_a_vm(client, alice, vm, run_tasks):
    client.force_login(alice)
    with run_tasks():
        response = client.post(reverse("vms:stop", args=[vm.pk]))
    assert response.status_code == 302
    assert response["Location"] == f"{env_page(vm)}#vm-{vm.pk}"
    vm.refresh_from_db()
    assert vm.status == Vm.Status.STOPPED
    client.post(reverse("vms:start", args=[vm.pk]))
    for kind in (VmKind.VM_STOP, VmKind.VM_START):
        assert Operation.objects.get(vm=vm, kind=kind).requested_by == alice


def test_it_destroys_a_vm(client, alice, vm):
    client.force_login(alice)
    client.post(reverse("vms:destroy", args=[vm.pk]))
    assert Operation.objects.get(vm=vm, kind=VmKind.VM_DESTROY).requested_by == alice


def test_it_sets_the_blacklist_from_lines(client, alice, vm):
    client.force_login(alice)
    client.post(reverse("vms:blacklist", args=[vm.pk]), {"addresses": "192.0.2.1\n198.51.100.7, 192.0.2.1"})
    op = Operation.objects.get(vm=vm, kind=VmKind.VM_SET_BLACKLIST)
    assert op.requested_by == alice
    vm.refresh_from_db()
    assert vm.net_blacklist == ["192.0.2.1", "198.51.100.7"]


def test_it_takes_the_longest_blacklist_and_refuses_one_more(client, alice, vm):
    client.force_login(alice)
    addresses = [f"192.0.{i // 256}.{i % 256}" for i in range(limits.BLACKLIST_MAX + 1)]
    response = client.post(reverse("vms:blacklist", args=[vm.pk]), {"addresses": "\n".join(addresses)},
                           follow=True)
    assert flash(response) == [f"addresses: at most {limits.BLACKLIST_MAX} addresses"]
    assert not Operation.objects.filter(kind=VmKind.VM_SET_BLACKLIST).exists()
    client.post(reverse("vms:blacklist", args=[vm.pk]), {"addresses": "\n".join(addresses[:-1])})
    assert Operation.objects.get(kind=VmKind.VM_SET_BLACKLIST).params["blacklist"][-1] == addresses[-2]


def test_it_reports_a_bad_blacklist_address(client, alice, vm):
    client.force_login(alice)
    response = client.post(reverse("vms:blacklist", args=[vm.pk]), {"addresses": "not-an-ip"}, follow=True)
    assert any("not an IPv4 address" in m for m in flash(response))
    assert not Operation.objects.filter(kind=VmKind.VM_SET_BLACKLIST).exists()


def test_it_takes_a_snapshot_with_a_life_time(client, alice, vm):
    client.force_login(alice)
    client.post(reverse("vms:snapshot_create", args=[vm.pk]), {"name": "s1", "life_time_hours": "2"})
    op = Operation.objects.get(vm=vm, kind=VmKind.SNAPSHOT_CREATE)
    assert op.requested_by == alice
    assert op.snapshot.life_time == 7200


def test_it_keeps_a_snapshot_without_a_life_time(client, alice, vm):
    client.force_login(alice)
    client.post(reverse("vms:snapshot_create", args=[vm.pk]), {"name": "s1", "life_time_hours": " "})
    assert Snapshot.objects.get(vm=vm).life_time is None


@pytest.mark.parametrize(("hours", "seconds"), [("8760", 365 * 24 * 3600), ("0.02", 72)])
def test_it_takes_a_snapshot_at_the_ends_of_its_life_time_range(client, alice, vm, hours, seconds):
    client.force_login(alice)
    response = client.post(reverse("vms:snapshot_create", args=[vm.pk]),
                           {"name": "s1", "life_time_hours": hours}, follow=True)
    assert Snapshot.objects.get(vm=vm).life_time == seconds, flash(response)  # snapshot_create agrees


@pytest.mark.parametrize("hours", ["8760.01", "0.01", "1e9", "nan", "inf", "-1", "0", "abc"])
def test_it_refuses_a_life_time_that_is_not_a_number_of_hours_in_range(client, alice, vm, db_state, hours):
    client.force_login(alice)
    before = db_state()
    response = client.post(reverse("vms:snapshot_create", args=[vm.pk]),
                           {"name": "s1", "life_time_hours": hours}, follow=True)
    assert response.redirect_chain[-1] == (f"{env_page(vm)}#vm-{vm.pk}", 302)
    assert flash(response) == [
        "Life time (life_time_hours): must be a number of hours between 0.02 and 8760, "
        "or empty to keep it until deleted"]
    assert db_state() == before


def test_it_reports_a_bad_snapshot_name(client, alice, vm):
    client.force_login(alice)
    response = client.post(reverse("vms:snapshot_create", args=[vm.pk]), {"name": "Bad Name"}, follow=True)
    assert any(m.startswith("name:") for m in flash(response))
    assert not Snapshot.objects.exists()


def test_it_asks_to_retry_a_snapshot_that_lost_a_race(client, alice, vm, monkeypatch, db_state):
    monkeypatch.setattr(services, "snapshot_create", lose_a_race)
    client.force_login(alice)
    before = db_state()
    response = client.post(reverse("vms:snapshot_create", args=[vm.pk]), {"name": "s1"}, follow=True)
    assert response.redirect_chain[-1] == (f"{env_page(vm)}#vm-{vm.pk}", 302)
    assert flash(response) == [RETRY]
    assert db_state() == before


def test_it_applies_and_deletes_a_snapshot(client, alice, snapshot, run_tasks):
    client.force_login(alice)
    with run_tasks():
        client.post(reverse("vms:snapshot_apply", args=[snapshot.pk]))
    client.post(reverse("vms:snapshot_destroy", args=[snapshot.pk]))
    for kind in (VmKind.SNAPSHOT_APPLY, VmKind.SNAPSHOT_DESTROY):
        assert Operation.objects.get(kind=kind).requested_by == alice


def test_it_lets_staff_act_on_any_vm(client, olga, vm):
    client.force_login(olga)
    client.post(reverse("vms:stop", args=[vm.pk]))
    assert Operation.objects.get(vm=vm, kind=VmKind.VM_STOP).requested_by == olga


@pytest.mark.parametrize("name", VM_ACTIONS)
def test_it_returns_404_for_someone_elses_vm(client, bob, vm, name):
    client.force_login(bob)
    response = client.post(reverse(name, args=[vm.pk]), {"name": "s1", "addresses": ""})
    assert response.status_code == 404
    assert not Operation.objects.filter(requested_by=bob).exists()


@pytest.mark.parametrize("name", SNAPSHOT_ACTIONS)
def test_it_returns_404_for_someone_elses_snapshot(client, bob, snapshot, name):
    client.force_login(bob)
    assert client.post(reverse(name, args=[snapshot.pk])).status_code == 404
    assert not Operation.objects.filter(requested_by=bob).exists()


@pytest.mark.parametrize("name", VM_ACTIONS + SNAPSHOT_ACTIONS)
def test_it_refuses_get_on_an_action(client, alice, snapshot, name):
    client.force_login(alice)
    pk = snapshot.pk if name in SNAPSHOT_ACTIONS else snapshot.vm_id
    assert client.get(reverse(name, args=[pk])).status_code == 405


@pytest.mark.parametrize("name", VM_ACTIONS + SNAPSHOT_ACTIONS)
def test_it_rejects_an_action_without_a_csrf_token(alice, snapshot, name):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    pk = snapshot.pk if name in SNAPSHOT_ACTIONS else snapshot.vm_id
    before = Operation.objects.count()
    assert client.post(reverse(name, args=[pk]), {"name": "s2", "addresses": ""}).status_code == 403
    assert Operation.objects.count() == before


def test_it_sends_anonymous_posts_to_sign_in(client, vm):
    response = client.post(reverse("vms:stop", args=[vm.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert not Operation.objects.filter(kind=VmKind.VM_STOP).exists()


# --- templates --------------------------------------------------------------------------


def test_it_lists_usable_templates_with_engines_and_minimums(client, alice, template):
    VmTemplate.objects.create(name="tt/retired", path="x.qcow2", compatible_engines=["docker"], enabled=False)
    template.min_cpu, template.min_mem_mb = 2, 512
    template.save()
    client.force_login(alice)
    response = client.get(reverse("vms:templates"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "tt/busybox" in body and "libvirt" in body and "512 MiB" in body and "20 MiB" in body
    assert "tt/retired" not in body


def test_it_shows_staff_disabled_templates_too(client, olga, template):
    VmTemplate.objects.create(name="tt/retired", path="x.qcow2", compatible_engines=["docker"], enabled=False)
    client.force_login(olga)
    body = client.get(reverse("vms:templates")).content.decode()
    assert "tt/retired" in body and "disabled" in body


def test_it_sends_anonymous_users_from_templates_to_sign_in(client, template):
    response = client.get(reverse("vms:templates"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_shows_a_vm_page_in_constant_queries(client, alice, vm, run_tasks):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(vm_page(vm)).status_code == 200
        return len(captured)

    client.force_login(alice)
    few = queries()
    for name in ("a", "b", "c"):
        take_snapshot(vm, run_tasks, name)
    with run_tasks():
        client.post(reverse("vms:ports", args=[vm.pk]), {"ports": "22, 80, 443, 8080, 53/udp"})
    assert vm.port_mappings.count() == 5
    assert queries() == few


def test_it_says_when_the_node_keeps_no_console_log(client, alice, vm):
    client.force_login(alice)
    assert "keeps no console log" in client.get(vm_page(vm)).content.decode()


def test_it_shows_the_console_log_escaped(client, alice, vm, monkeypatch):
    seen = []

    def fake_console_log(node, vm_name):
        seen.append((node.pk, vm_name))
        return "TT-READY name=web\n<script>alert(1)</script>\n"

    monkeypatch.setattr("vms.views.console_log", fake_console_log)
    client.force_login(alice)
    body = client.get(vm_page(vm)).content.decode()
    assert seen == [(vm.node_id, vm.engine_name)]
    assert "TT-READY name=web" in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "<script>alert(1)" not in body


# --- what the guest agent reports --------------------------------------------------------


def guest_part(client, vm: Vm) -> str:
    return client.get(reverse("vms:guest", args=[vm.pk])).content.decode()


def test_the_vm_page_asks_for_the_guests_addresses_only_where_an_agent_runs(client, alice, vm):
    client.force_login(alice)
    assert reverse("vms:guest", args=[vm.pk]) not in client.get(vm_page(vm)).content.decode()
    assert "Its template has no guest agent." in guest_part(client, vm)
    Vm.objects.filter(pk=vm.pk).update(features=["guest-agent"])
    assert f'hx-get="{reverse("vms:guest", args=[vm.pk])}"' in client.get(vm_page(vm)).content.decode()


def test_it_shows_what_the_agent_reports_beside_the_expected_address(client, alice, vm, monkeypatch):
    from engines.libvirt.engine import LibvirtEngine

    client.force_login(alice)
    Vm.objects.filter(pk=vm.pk).update(features=["guest-agent"])
    monkeypatch.setattr(LibvirtEngine, "guest_addresses", lambda self, spec: None)  # still booting
    assert "The guest agent does not answer (yet)" in guest_part(client, vm)
    monkeypatch.setattr(LibvirtEngine, "guest_addresses", lambda self, spec: [("ens3", f"{spec.ip}/16")])
    body = guest_part(client, vm)
    assert f"<code>{vm.ip}/16</code> <span class=\"muted\">ens3</span>" in body
    assert f"<code>{vm.ip}</code>" in body  # what we expect, beside it
    Vm.objects.filter(pk=vm.pk).update(status=Vm.Status.STOPPED)
    assert "It is not running." in guest_part(client, vm)
