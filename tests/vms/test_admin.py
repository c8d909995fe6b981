"""The VM, template, snapshot and port admin: templates are managed here, the rest through services."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse

from operations.models import Operation
from tests.admin_support import (
    count_queries,
    grant,
    make_env,
    make_operator,
    messages_of,
    offered_actions,
    post_action,
)
from tests.support import take_snapshot
from vms.kinds import VmKind
from vms.models import PortMapping, Snapshot, Vm, VmTemplate

VMS = reverse("admin:vms_vm_changelist")
TEMPLATES = reverse("admin:vms_vmtemplate_changelist")
SNAPSHOTS = reverse("admin:vms_snapshot_changelist")
PORTS = reverse("admin:vms_portmapping_changelist")


@pytest.fixture
def root(client, db):
    return make_operator(client)


@pytest.fixture
def vm(alice, template, run_tasks) -> Vm:
    env = make_env(alice, run=run_tasks, ports=(80, "53/udp"))
    return env.vms.get()


def test_it_shows_every_list_and_page(client, root, vm, run_tasks):
    snapshot = take_snapshot(vm, run_tasks)
    mapping = vm.port_mappings.first()
    pages = [
        VMS, reverse("admin:vms_vm_change", args=[vm.pk]),
        TEMPLATES, reverse("admin:vms_vmtemplate_change", args=[vm.template_id]),
        reverse("admin:vms_vmtemplate_add"),
        SNAPSHOTS, reverse("admin:vms_snapshot_change", args=[snapshot.pk]),
        PORTS, reverse("admin:vms_portmapping_change", args=[mapping.pk]),
    ]
    for url in pages:
        assert client.get(url).status_code == 200, url


def test_it_lists_vms_with_their_ports(client, root, vm):
    response = client.get(VMS)
    ports = {(p.protocol, p.inner_port): p.public_port for p in vm.port_mappings.all()}
    text = response.content.decode()
    assert f"203.0.113.10:{ports['tcp', 80]} -&gt; 80/tcp" in text
    assert f"203.0.113.10:{ports['udp', 53]} -&gt; 53/udp" in text
    assert vm.ip in text and vm.mac in text
    assert "1 vCPU / 256 MiB / 20 MiB" in text


def test_it_stops_and_starts_a_vm_as_the_operator(client, root, vm, run_tasks):
    with run_tasks():
        response = post_action(client, VMS, "stop", [vm])
    assert ("success", "Stop queued: 1 vm.") in messages_of(response)
    vm.refresh_from_db()
    assert vm.status == Vm.Status.STOPPED
    with run_tasks():
        post_action(client, VMS, "start", [vm])
    vm.refresh_from_db()
    assert vm.status == Vm.Status.RUNNING
    ops = Operation.objects.filter(kind__in=[VmKind.VM_STOP, VmKind.VM_START])
    assert sorted((o.kind, o.requested_by, o.status) for o in ops) == [
        ("vm_start", root, "succeeded"), ("vm_stop", root, "succeeded"),
    ]


def test_it_reports_a_refused_vm_action_and_changes_nothing(client, root, vm, run_tasks, settings):
    settings.TT_MGMT_COOLDOWN = 3600
    with run_tasks():
        response = post_action(client, VMS, "stop", [vm])
    msgs = messages_of(response)
    assert len(msgs) == 1 and msgs[0][0] == "error" and "retry in" in msgs[0][1]
    vm.refresh_from_db()
    assert vm.status == Vm.Status.RUNNING
    assert not Operation.objects.filter(kind=VmKind.VM_STOP).exists()


def test_it_destroys_a_vm(client, root, vm, run_tasks):
    with run_tasks():
        post_action(client, VMS, "destroy", [vm])
    vm.refresh_from_db()
    assert vm.status == Vm.Status.DESTROYED
    assert (vm.ip, vm.mac) == (None, None)
    assert not PortMapping.objects.exists()
    op = Operation.objects.get(kind=VmKind.VM_DESTROY)
    assert (op.requested_by, op.status) == (root, Operation.Status.SUCCEEDED)


def test_it_does_not_add_edit_or_delete_vms_directly(client, root, vm):
    assert client.get(reverse("admin:vms_vm_add")).status_code == 403
    response = client.post(reverse("admin:vms_vm_change", args=[vm.pk]), {"status": "stopped", "cpu_num": 8})
    assert response.status_code == 403
    assert client.get(reverse("admin:vms_vm_delete", args=[vm.pk])).status_code == 403
    vm.refresh_from_db()
    assert (vm.status, vm.cpu_num) == (Vm.Status.RUNNING, 1)
    for url in (PORTS, SNAPSHOTS):
        actions = client.get(url).context.get("action_form")
        assert actions is None or "delete_selected" not in dict(actions.fields["action"].choices)


def test_it_filters_and_searches_vms(client, root, alice, bob, template):
    make_env(alice, name="mine")
    theirs = make_env(bob, name="theirs")

    def envs(query: str) -> set[str]:
        return {v.env.name for v in client.get(f"{VMS}?{query}").context["cl"].result_list}

    assert envs(f"env__owner__id__exact={bob.pk}") == {"theirs"}
    assert envs("q=theirs") == {"theirs"}
    assert envs(f"q={theirs.vms.get().ip}") == {"theirs"}
    assert envs("status__exact=creating") == {"mine", "theirs"}
    assert envs("status__exact=running") == set()
    assert envs("net_kind__exact=nat") == {"mine", "theirs"}


def test_it_destroys_a_snapshot_as_the_operator(client, root, vm, run_tasks):
    snapshot = take_snapshot(vm, run_tasks)
    with run_tasks():
        response = post_action(client, SNAPSHOTS, "destroy", [snapshot])
    assert ("success", "Destroy queued: 1 snapshot.") in messages_of(response)
    assert not Snapshot.objects.exists()
    op = Operation.objects.get(kind=VmKind.SNAPSHOT_DESTROY)
    assert (op.requested_by, op.status) == (root, Operation.Status.SUCCEEDED)


def test_it_filters_snapshots_by_expiry(client, root, vm, run_tasks):
    take_snapshot(vm, run_tasks, "kept")
    take_snapshot(vm, run_tasks, "hour", life_time=1800)
    take_snapshot(vm, run_tasks, "week", life_time=7 * 86400)

    def names(query: str) -> set[str]:
        return {s.name for s in client.get(f"{SNAPSHOTS}?{query}").context["cl"].result_list}

    assert names("expiry=never") == {"kept"}
    assert names("expiry=1h") == {"hour"}
    assert names("expiry=later") == {"week"}
    with time_machine.travel(Snapshot.objects.get(name="hour").expires_at + timedelta(seconds=1)):
        assert names("expiry=expired") == {"hour"}


def test_it_manages_templates(client, root, template):
    response = client.post(reverse("admin:vms_vmtemplate_add"), {
        "name": "tt/alpine", "path": "alpine.qcow2", "memo": "", "compatible_engines": ["libvirt"],
        "features": "[]", "enabled": "on", "kernel": "", "initrd": "", "cmdline": "",
        "size_mb": "100", "min_cpu": "1", "min_mem_mb": "128",
    })
    assert response.status_code == 302, response.context["adminform"].form.errors
    alpine = VmTemplate.objects.get(name="tt/alpine")
    assert alpine.compatible_engines == ["libvirt"]
    assert alpine.min_mem_mb == 128
    response = client.get(TEMPLATES)
    assert b"tt/alpine" in response.content and b"1 vCPU, 128 MiB" in response.content
    response = client.post(reverse("admin:vms_vmtemplate_change", args=[alpine.pk]), {
        "name": "tt/alpine", "path": "alpine.qcow2", "memo": "", "compatible_engines": ["libvirt"],
        "features": "[]", "kernel": "", "initrd": "", "cmdline": "",
        "size_mb": "100", "min_cpu": "1", "min_mem_mb": "128",
    })
    assert response.status_code == 302
    alpine.refresh_from_db()
    assert not alpine.enabled


@pytest.mark.parametrize(("given", "kept"), [('["22", "53/udp"]', ["22", "53/udp"]), ("", [])])
def test_it_keeps_a_templates_default_ports(client, root, template, given, kept):
    response = client.post(reverse("admin:vms_vmtemplate_change", args=[template.pk]), {
        "name": template.name, "path": template.path, "memo": "", "compatible_engines": ["libvirt"],
        "features": "[]", "default_ports": given, "enabled": "on", "kernel": "", "initrd": "", "cmdline": "",
        "size_mb": "20", "min_cpu": "1", "min_mem_mb": "64",
    })
    assert response.status_code == 302, response.context["adminform"].form.errors
    template.refresh_from_db()
    assert template.default_ports == kept


@pytest.mark.parametrize("given", ['"22"', "[22]", '["70000"]', '["ssh"]', "{}"])
def test_it_refuses_default_ports_users_could_not_type(client, root, template, given):
    response = client.post(reverse("admin:vms_vmtemplate_change", args=[template.pk]), {
        "name": template.name, "path": template.path, "memo": "", "compatible_engines": ["libvirt"],
        "features": "[]", "default_ports": given, "enabled": "on", "kernel": "", "initrd": "", "cmdline": "",
        "size_mb": "20", "min_cpu": "1", "min_mem_mb": "64",
    })
    assert response.status_code == 200
    assert "default_ports" in response.context["adminform"].form.errors
    template.refresh_from_db()
    assert template.default_ports == []


def test_it_counts_live_vms_per_template(client, root, alice, template, run_tasks):
    make_env(alice, name="a", vms=3)
    row = client.get(TEMPLATES).context["cl"].result_list[0]
    assert row.live_vms == 3


def test_it_sends_non_staff_to_the_login_page(client, alice):
    client.force_login(alice)
    for url in (VMS, TEMPLATES, SNAPSHOTS, PORTS):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_it_lists_in_a_constant_number_of_queries(client, root, alice, template, run_tasks):
    first = make_env(alice, name="first", run=run_tasks, ports=(22, 80))
    take_snapshot(first.vms.get(), run_tasks)
    urls = (VMS, TEMPLATES, SNAPSHOTS, PORTS)
    one = [count_queries(client, url) for url in urls]
    for i in range(3):
        env = make_env(alice, name=f"more{i}", run=run_tasks, vms=3, ports=(22, 80))
        for vm in env.vms.all():
            take_snapshot(vm, run_tasks)
    assert [count_queries(client, url) for url in urls] == one


# --- staff act through permissions -----------------------------------------------------------


def test_staff_without_permissions_get_403_on_vms_and_snapshots(client, stan, vm, db_state):
    client.force_login(stan)
    before = db_state()
    for url in (VMS, SNAPSHOTS, reverse("admin:vms_vm_change", args=[vm.pk])):
        assert client.get(url).status_code == 403, url
    destroy = {"action": "destroy", "_selected_action": [vm.pk], "index": "0"}
    assert client.post(VMS, destroy).status_code == 403
    assert db_state() == before


def test_staff_holding_change_vm_stop_vms_but_do_not_destroy_them(client, stan, vm, run_tasks, db_state):
    grant(stan, "vms.view_vm", "vms.view_snapshot")
    client.force_login(stan)
    assert offered_actions(client, VMS) == offered_actions(client, SNAPSHOTS) == set()
    grant(stan, "vms.change_vm")
    assert offered_actions(client, VMS) == {"start", "stop", "suspend"}
    before = db_state()
    post_action(client, VMS, "destroy", [vm])  # not offered: refused, nothing changes
    assert db_state() == before
    with run_tasks():
        response = post_action(client, VMS, "stop", [vm])
    assert ("success", "Stop queued: 1 vm.") in messages_of(response)
    vm.refresh_from_db()
    assert vm.status == Vm.Status.STOPPED
    grant(stan, "vms.delete_vm", "vms.delete_snapshot")
    assert "destroy" in offered_actions(client, VMS)
    assert offered_actions(client, SNAPSHOTS) == {"destroy"}
