"""The admin's "Add Env" page: an operator creates an Env with VMs for a user, through env_create."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from envs import services
from envs.admin_forms import EXTRA_VM_ROWS
from envs.kinds import EnvKind
from envs.models import Env
from operations.models import Operation
from tests.admin_support import make_env, make_operator, messages_of
from tests.support import RETRY, lose_a_race
from vms.models import PortMapping, Vm

ADD = reverse("admin:envs_env_add")
ENVS = reverse("admin:envs_env_changelist")


@pytest.fixture
def root(client, db):
    return make_operator(client)


def vm_row(template, name: str, **fields) -> dict:
    return {"name": name, "template": str(template.pk), "cpu_num": "1", "mem_mb": "128", "disk_mb": "",
            "ports": "", "net_kind": "nat", **fields}


def form_data(owner, rows: list[dict | None], **fields) -> dict:
    """What the page posts: the Env's fields, then one group per VM row (None = a blank row)."""
    total = max(len(rows), 1 + EXTRA_VM_ROWS)
    data = {"owner": str(owner.pk), "name": "demo", "lifetime_hours": "2", "idempotency_key": "",
            "vms-TOTAL_FORMS": str(total), "vms-INITIAL_FORMS": "0",
            "vms-MIN_NUM_FORMS": "1", "vms-MAX_NUM_FORMS": "100", **fields}
    for i, row in enumerate(rows):
        for key, value in (row or {}).items():
            data[f"vms-{i}-{key}"] = value
    for i in range(total):  # what the browser sends for untouched rows
        data.setdefault(f"vms-{i}-cpu_num", "1")
        data.setdefault(f"vms-{i}-mem_mb", "256")
        data.setdefault(f"vms-{i}-net_kind", "nat")
    return data


def nothing_written() -> bool:
    return not (Env.objects.exists() or Vm.objects.exists() or Operation.objects.exists())


def test_it_renders_the_add_page(client, root, alice, template):
    response = client.get(ADD)
    assert response.status_code == 200
    form, formset = response.context["form"], response.context["formset"]
    assert alice in form.fields["owner"].queryset
    assert list(formset.forms[0].fields["template"].queryset) == [template]
    assert form["lifetime_hours"].value() == "4"  # TT_DEFAULT_ENV_LIFETIME, in hours
    assert "at most 168 h" in form.fields["lifetime_hours"].help_text
    assert len(formset.forms) == 1 + EXTRA_VM_ROWS
    assert len(form["idempotency_key"].value()) == 32  # a fresh key per rendered form
    content = response.content.decode()
    assert 'name="vms-3-ports"' in content and "tt/busybox" in content
    assert "Create Env" in content


def test_it_keeps_the_add_button_on_the_changelist(client, root, alice):
    response = client.get(ENVS)
    assert response.context["has_add_permission"]
    assert ADD in response.content.decode()


def test_it_creates_an_env_with_two_vms_for_alice(client, root, alice, template, run_tasks):
    rows = [vm_row(template, "web", ports="80, 443, 53/udp", cpu_num="2"), None,
            vm_row(template, "db", disk_mb="40")]
    with run_tasks():
        response = client.post(ADD, form_data(alice, rows, deny_outgoing="on"), follow=True)
    env = Env.objects.get()
    assert response.redirect_chain == [(reverse("admin:envs_env_change", args=[env.pk]), 302)]
    assert (env.owner, env.name, env.deny_outgoing) == (alice, "demo", True)
    assert (env.end_at - env.start_at).total_seconds() == 2 * 3600
    op = Operation.objects.get()
    assert (op.kind, op.env, op.requested_by) == (EnvKind.ENV_CREATE, env, root)
    assert op.status == Operation.Status.SUCCEEDED, op.error_message
    vms = {vm.name: vm for vm in env.vms.all()}
    assert set(vms) == {"web", "db"}
    assert {vm.status for vm in vms.values()} == {Vm.Status.RUNNING}
    assert (vms["web"].cpu_num, vms["web"].mem_mb, vms["web"].disk_mb) == (2, 128, 20)
    assert vms["db"].disk_mb == 40
    ports = set(PortMapping.objects.filter(vm=vms["web"]).values_list("protocol", "inner_port"))
    assert ports == {("tcp", 80), ("tcp", 443), ("udp", 53)}
    [(level, text)] = messages_of(response)
    assert level == "success"
    assert f"operation {op.pk}" in text and "demo" in text and "alice" in text


@pytest.mark.parametrize(
    ("fields", "rows", "where", "expected"),
    [
        ({}, [{"disk_mb": "5"}], ("vms", 0, "disk_mb"), "template's size"),
        ({"name": "Bad_Name"}, [{}], ("env", "name"), "lower-case letters"),
        ({}, [{}, {"name": "vm0"}], ("vms", 1, "name"), "already has a VM named vm0"),
        ({"lifetime_hours": "168.01"}, [{}], ("env", "lifetime_hours"), "between 0.01 and 168"),
        ({"lifetime_hours": "1e9"}, [{}], ("env", "lifetime_hours"), "between 0.01 and 168"),
        ({}, [{"ports": "80, abc"}], ("vms", 0, "ports"), "must be a port"),
        ({}, [{}, None, {"net_kind": "flat", "ports": "22"}], ("vms", 2, "ports"), "FLAT VMs"),
    ],
    ids=["disk-too-small", "bad-name", "duplicate-vm-names", "lifetime-past-max", "lifetime-absurd",
         "bad-port", "row-after-a-blank-row"],
)
def test_it_shows_a_refusal_beside_the_field(client, root, alice, template, fields, rows, where, expected):
    typed = [None if row is None else vm_row(template, **{"name": f"vm{i}", **row})
             for i, row in enumerate(rows)]
    data = form_data(alice, typed, **fields)
    response = client.post(ADD, data)
    assert response.status_code == 200
    assert nothing_written()
    form, formset = response.context["form"], response.context["formset"]
    errors = form.errors[where[1]] if where[0] == "env" else formset.forms[where[1]].errors[where[2]]
    assert any(expected in e for e in errors), errors
    assert "Please correct the error below." in response.content.decode()
    # Everything the operator typed comes back as typed.
    for key, value in data.items():
        if key.startswith("vms-") and not key.endswith("FORMS"):
            i, name = key.split("-")[1:]
            assert str(formset.forms[int(i)][name].value()) == value, key
    assert form["name"].value() == data["name"]
    assert form["lifetime_hours"].value() == data["lifetime_hours"]
    assert form["owner"].value() == str(alice.pk)


def test_it_asks_to_retry_a_create_that_lost_a_race(client, root, alice, template, monkeypatch, db_state):
    make_env(alice)  # what the racing request clashes with
    monkeypatch.setattr(services, "env_create", lose_a_race)
    before = db_state()
    response = client.post(ADD, form_data(alice, [vm_row(template, "web")], name="other"))
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [RETRY]
    assert db_state() == before


def test_it_asks_for_at_least_one_vm(client, root, alice, template):
    response = client.post(ADD, form_data(alice, []))
    assert response.status_code == 200
    assert response.context["formset"].forms[0].errors["name"]
    assert nothing_written()


def test_it_shows_an_env_wide_vm_refusal_above_the_rows(client, root, alice, template, settings):
    settings.TT_MAX_VMS_PER_ENV = 1
    response = client.post(ADD, form_data(alice, [vm_row(template, "a"), vm_row(template, "b")]))
    assert response.status_code == 200
    assert any("at most 1 VMs" in e for e in response.context["formset"].non_form_errors())
    assert nothing_written()


def test_it_refuses_a_name_the_owner_already_uses(client, root, alice, bob, template):
    assert client.post(ADD, form_data(alice, [vm_row(template, "vm0")])).status_code == 302
    response = client.post(ADD, form_data(alice, [vm_row(template, "vm0")]))
    assert response.status_code == 200
    assert "already has a live Env named demo" in response.context["form"].errors["name"][0]
    # Another owner may use the name.
    assert client.post(ADD, form_data(bob, [vm_row(template, "vm0")])).status_code == 302
    assert Env.objects.filter(name="demo").count() == 2


def test_it_creates_once_on_a_double_submit(client, root, alice, template):
    data = form_data(alice, [vm_row(template, "vm0")], idempotency_key="form-1")
    first, second = client.post(ADD, data), client.post(ADD, data)
    assert first.status_code == second.status_code == 302
    assert first["Location"] == second["Location"]
    assert Env.objects.count() == Operation.objects.count() == 1


def test_it_lets_a_staff_user_with_the_add_permission_create(client, stan, alice, template, run_tasks):
    stan.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="envs", codename__in=["add_env", "view_env"]))
    client.force_login(stan)
    assert client.get(ADD).status_code == 200
    with run_tasks():
        response = client.post(ADD, form_data(alice, [vm_row(template, "vm0")]))
    assert response.status_code == 302
    op = Operation.objects.get()
    assert (op.requested_by, op.env.owner, op.status) == (stan, alice, Operation.Status.SUCCEEDED)


def test_it_refuses_staff_without_the_add_permission(client, stan, alice, template):
    client.force_login(stan)
    assert client.get(ADD).status_code == 403
    assert client.post(ADD, form_data(alice, [vm_row(template, "vm0")])).status_code == 403
    assert nothing_written()


def test_it_sends_non_staff_to_the_login_page(client, alice, template):
    client.force_login(alice)
    for response in (client.get(ADD), client.post(ADD, form_data(alice, [vm_row(template, "vm0")]))):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    assert nothing_written()
