"""The portal's Env pages and actions: who sees what, what each action records,
how errors and the cooldown show, and that pages cost a fixed number of queries."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from envs import services
from envs.kinds import EnvKind
from envs.models import Env
from operations.models import Operation
from tests.support import RETRY, T0, lose_a_race
from vms import services as vm_services
from vms.kinds import VmKind
from vms.models import Snapshot
from vms.new_vms import NewVm

PAGES = ["envs:detail", "envs:operations"]
# What no hours field takes, besides one past its limit.
NOT_HOURS = ["1e9", "nan", "inf", "-1", "0", "abc"]
ACTIONS = ["envs:start", "envs:stop", "envs:extend", "envs:outgoing", "envs:destroy"]


def url(name: str, env: Env | None = None) -> str:
    return reverse(name, args=[env.pk]) if env is not None else reverse(name)


def flash(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


# --- who sees what ---------------------------------------------------------------------


def test_it_lists_my_envs(client, alice, make_env):
    env = make_env(alice, vms=2)
    client.force_login(alice)
    response = client.get(url("envs:list"))
    assert response.status_code == 200
    body = response.content.decode()
    assert env.name in body
    assert url("envs:detail", env) in body
    assert 'data-end="' in body  # the countdown


def test_it_hides_other_users_envs_from_the_list(client, alice, bob, make_env):
    make_env(alice, name="alices-env")
    client.force_login(bob)
    response = client.get(url("envs:list"))
    assert response.status_code == 200
    assert "alices-env" not in response.content.decode()


@pytest.mark.parametrize("name", PAGES)
def test_it_shows_env_pages_to_the_owner(client, alice, make_env, name):
    env = make_env(alice)
    client.force_login(alice)
    assert client.get(url(name, env)).status_code == 200


@pytest.mark.parametrize("name", PAGES)
def test_it_returns_404_for_someone_elses_env(client, alice, bob, make_env, name):
    env = make_env(alice)
    client.force_login(bob)
    response = client.get(url(name, env))
    assert response.status_code == 404
    assert "not yours" in response.content.decode()  # the portal's own 404 page


@pytest.mark.parametrize("name", ACTIONS)
def test_it_returns_404_for_an_action_on_someone_elses_env(client, alice, bob, make_env, name):
    env = make_env(alice)
    client.force_login(bob)
    response = client.post(url(name, env), {"hours": "1", "deny": "1", "confirm": env.name})
    assert response.status_code == 404
    assert not Operation.objects.filter(requested_by=bob).exists()


@pytest.mark.parametrize("name", ["envs:list", "envs:create", "envs:detail", "envs:operations",
                                  "envs:add_vm"])
def test_it_sends_anonymous_users_to_sign_in(client, alice, make_env, name):
    env = make_env(alice)
    target = url(name) if name in ("envs:list", "envs:create") else url(name, env)
    response = client.get(target)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_shows_staff_every_env(client, alice, olga, make_env):
    env = make_env(alice, name="alices-env")
    client.force_login(olga)
    body = client.get(url("envs:list")).content.decode()
    assert "alices-env" in body and "alice" in body
    response = client.get(url("envs:detail", env))
    assert response.status_code == 200
    assert "Owner" in response.content.decode()


def test_it_signs_in_and_out(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 302
    assert response["Location"] == url("envs:list")
    assert client.get(url("envs:list")).status_code == 200
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(url("envs:list")).status_code == 302


def test_it_lists_destroyed_envs_apart(client, alice, make_env, run_tasks):
    env = make_env(alice, name="gone")
    with run_tasks():
        services.env_destroy(env=env, by=alice)
    client.force_login(alice)
    assert "gone" not in client.get(url("envs:list")).content.decode()
    assert "gone" in client.get(url("envs:list") + "?destroyed=1").content.decode()


# --- creating an Env --------------------------------------------------------------------


def vm_row(i: int = 0, **values) -> dict:
    row = {"name": f"vm{i}", "template": "", "cpu_num": "1", "mem_mb": "256", "disk_mb": "",
           "ports": "", "net_kind": "nat"}
    row.update(values)
    return {f"vms-{i}-{key}": value for key, value in row.items()}


def create_data(template, *rows, **env_values) -> dict:
    rows = rows or (vm_row(0, template=str(template.pk), ports="22, 80"),)
    data = {"name": "web", "lifetime_hours": "2", "idempotency_key": "k1",
            "vms-TOTAL_FORMS": str(len(rows)), "vms-INITIAL_FORMS": "0",
            "vms-MIN_NUM_FORMS": "1", "vms-MAX_NUM_FORMS": "100"}
    for row in rows:
        data.update(row)
    data.update(env_values)
    return data


def test_it_shows_the_create_form_with_defaults(client, alice, template, settings):
    settings.TT_DEFAULT_ENV_LIFETIME = 3 * 3600
    client.force_login(alice)
    response = client.get(url("envs:create"))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'name="lifetime_hours"' in body and 'value="3"' in body
    assert "tt/busybox" in body


def test_it_creates_an_env_owned_by_the_signed_in_user(client, alice, template):
    client.force_login(alice)
    response = client.post(url("envs:create"), create_data(template))
    env = Env.objects.get(name="web")
    assert response.status_code == 302
    assert response["Location"] == url("envs:detail", env)
    assert env.owner == alice
    op = Operation.objects.get(env=env)
    assert op.kind == EnvKind.ENV_CREATE and op.requested_by == alice
    assert sorted(env.vms.get().port_mappings.values_list("inner_port", flat=True)) == [22, 80]


def test_it_shows_a_service_refusal_beside_the_field_and_keeps_what_was_typed(client, alice, template):
    client.force_login(alice)
    data = create_data(template, vm_row(0, template=str(template.pk), mem_mb="16", ports="22, 80"))
    response = client.post(url("envs:create"), data)
    assert response.status_code == 200
    assert not Env.objects.exists()
    row = response.context["formset"].forms[0]
    assert "template minimum" in row.errors["mem_mb"][0]
    body = response.content.decode()
    # The error sits in the memory cell, and the typed values are still there.
    cell = body.split('class="cell-mem_mb has-error"')[1].split("</td>")[0]
    assert "template minimum" in cell and 'value="16"' in cell
    assert 'value="web"' in body and 'value="22, 80"' in body


def test_it_shows_a_lifetime_past_the_maximum_beside_the_lifetime(client, alice, template, settings):
    settings.TT_MAX_ENV_LIFETIME = 24 * 3600
    client.force_login(alice)
    response = client.post(url("envs:create"), create_data(template, lifetime_hours="48"))
    assert response.status_code == 200
    assert response.context["form"].errors["lifetime_hours"]
    assert 'value="48"' in response.content.decode()
    assert not Env.objects.exists()


def test_it_creates_an_env_for_the_longest_lifetime(client, alice, template):
    client.force_login(alice)
    response = client.post(url("envs:create"), create_data(template, lifetime_hours="168"))
    assert response.status_code == 302
    env = Env.objects.get()
    assert (env.end_at - env.start_at).total_seconds() == 168 * 3600


@pytest.mark.parametrize("hours", ["168.01", *NOT_HOURS])
def test_it_refuses_a_lifetime_that_is_not_a_number_of_hours_in_range(client, alice, template, db_state,
                                                                      hours):
    client.force_login(alice)
    before = db_state()
    response = client.post(url("envs:create"), create_data(template, lifetime_hours=hours))
    assert response.status_code == 200
    assert response.context["form"].errors["lifetime_hours"] == [
        "must be a number of hours between 0.01 and 168"]
    assert f'value="{hours}"' in response.content.decode()
    assert db_state() == before


def test_it_shows_a_port_error_with_the_port(client, alice, template):
    client.force_login(alice)
    data = create_data(template, vm_row(0, template=str(template.pk), ports="22 99999"))
    response = client.post(url("envs:create"), data)
    assert response.status_code == 200
    assert "99999:" in response.context["formset"].forms[0].errors["ports"][0]


def test_it_names_a_duplicate_env(client, alice, make_env, template):
    make_env(alice, name="web")
    client.force_login(alice)
    response = client.post(url("envs:create"), create_data(template))
    assert "already has a live Env" in response.context["form"].errors["name"][0]


def test_it_asks_to_retry_a_create_that_lost_a_race(client, alice, make_env, template, monkeypatch, db_state):
    make_env(alice)  # what the racing request clashes with
    monkeypatch.setattr(services, "env_create", lose_a_race)
    client.force_login(alice)
    before = db_state()
    response = client.post(url("envs:create"), create_data(template))
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [RETRY]
    assert db_state() == before


# --- add a VM to a live Env ---------------------------------------------------------------


def add_vm_data(template, **values) -> dict:
    data = {"name": "extra", "template": str(template.pk), "cpu_num": "1", "mem_mb": "128",
            "disk_mb": "", "ports": "22, 53/udp", "net_kind": "nat"}
    data.update(values)
    return data


def test_it_adds_a_vm_to_an_env(client, alice, make_env, template, run_tasks):
    env = make_env(alice)
    client.force_login(alice)
    assert url("envs:add_vm", env) in client.get(url("envs:detail", env)).content.decode()
    with run_tasks():
        response = client.post(url("envs:add_vm", env), add_vm_data(template))
    assert response.status_code == 302 and response["Location"] == url("envs:detail", env)
    op = Operation.objects.get(env=env, kind=VmKind.VM_ADD)
    assert op.requested_by == alice and op.status == Operation.Status.SUCCEEDED
    vm = env.vms.get(name="extra")
    assert vm.status == "running"
    assert sorted(vm.port_mappings.values_list("protocol", "inner_port")) == [("tcp", 22), ("udp", 53)]


@pytest.mark.parametrize(
    ("values", "field", "says"),
    [
        ({"name": "vm0"}, "name", "already has a VM named vm0"),
        ({"name": "Not A Label"}, "name", "lower-case"),
        ({"mem_mb": "16"}, "mem_mb", "template minimum"),
        ({"ports": "22 99999"}, "ports", "99999:"),
    ],
)
def test_it_shows_an_add_vm_refusal_beside_the_field(client, alice, make_env, template, values, field, says):
    env = make_env(alice)
    client.force_login(alice)
    response = client.post(url("envs:add_vm", env), add_vm_data(template, **values))
    assert response.status_code == 200
    assert says in response.context["form"].errors[field][0]
    for typed in values.values():  # what the user typed is still in the form
        assert f'value="{typed}"' in response.content.decode()
    assert env.vms.count() == 1
    assert not Operation.objects.filter(kind=VmKind.VM_ADD).exists()


def test_it_asks_to_retry_an_add_vm_that_lost_a_race(client, alice, make_env, template, monkeypatch,
                                                     db_state):
    env = make_env(alice)
    monkeypatch.setattr(vm_services, "vm_add", lose_a_race)
    client.force_login(alice)
    before = db_state()
    response = client.post(url("envs:add_vm", env), add_vm_data(template))
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [RETRY]
    assert db_state() == before


def test_it_shows_the_vm_limit_as_a_form_error(client, alice, make_env, template, settings):
    settings.TT_MAX_VMS_PER_ENV = 1
    env = make_env(alice)
    client.force_login(alice)
    response = client.post(url("envs:add_vm", env), add_vm_data(template))
    assert "at most 1 VMs" in response.context["form"].non_field_errors()[0]
    assert env.vms.count() == 1


def test_it_refuses_to_add_a_vm_to_someone_elses_env(client, alice, bob, make_env, template):
    env = make_env(alice)
    client.force_login(bob)
    assert client.get(url("envs:add_vm", env)).status_code == 404
    assert client.post(url("envs:add_vm", env), add_vm_data(template)).status_code == 404
    assert env.vms.count() == 1


def test_it_rejects_add_vm_without_a_csrf_token(alice, make_env, template):
    env = make_env(alice)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(url("envs:add_vm", env), add_vm_data(template)).status_code == 403
    assert env.vms.count() == 1


# --- Env actions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("envs:stop", {}, EnvKind.ENV_STOP),
        ("envs:extend", {"hours": "1.5"}, EnvKind.ENV_EXTEND),
        ("envs:outgoing", {"deny": "1"}, EnvKind.ENV_DENY_OUTGOING),
        ("envs:destroy", {"confirm": "demo"}, EnvKind.ENV_DESTROY),
    ],
)
def test_it_runs_an_env_action_for_the_owner(client, alice, make_env, name, data, kind):
    env = make_env(alice)
    client.force_login(alice)
    response = client.post(url(name, env), data, follow=True)
    assert response.redirect_chain[-1][0] == url("envs:detail", env)
    op = Operation.objects.get(env=env, kind=kind)
    assert op.requested_by == alice
    assert any(env.name in m for m in flash(response))


def test_it_starts_a_stopped_env(client, alice, make_env, run_tasks):
    env = make_env(alice)
    with run_tasks():
        services.env_stop(env=env, by=alice)
    client.force_login(alice)
    client.post(url("envs:start", env))
    assert Operation.objects.get(env=env, kind=EnvKind.ENV_START).requested_by == alice


def test_it_lets_staff_act_on_any_env(client, alice, olga, make_env):
    env = make_env(alice)
    client.force_login(olga)
    client.post(url("envs:stop", env))
    assert Operation.objects.get(env=env, kind=EnvKind.ENV_STOP).requested_by == olga


def test_it_extends_from_the_current_end(client, alice, make_env):
    env = make_env(alice)
    client.force_login(alice)
    client.post(url("envs:extend", env), {"hours": "2"})
    before = env.end_at
    env.refresh_from_db()
    assert (env.end_at - before).total_seconds() == 2 * 3600


def test_it_refuses_an_extension_past_the_maximum_with_a_message(client, alice, make_env, settings):
    settings.TT_MAX_ENV_LIFETIME = 5 * 3600
    env = make_env(alice)
    client.force_login(alice)
    response = client.post(url("envs:extend", env), {"hours": "4"}, follow=True)  # 4 h + 4 h > 5 h
    # Named as the form names it: hours, not the service's end_at or extend_by.
    assert any(m.startswith("hours: must not end past") for m in flash(response)), flash(response)
    assert not Operation.objects.filter(kind=EnvKind.ENV_EXTEND).exists()


def test_it_passes_an_extension_of_a_whole_lifetime_to_env_extend(client, alice, make_env):
    env = make_env(alice)
    client.force_login(alice)
    # At the limit the number is taken; the end it asks for is past start + 168 h, which
    # is env_extend's rule to state.
    response = client.post(url("envs:extend", env), {"hours": "168"}, follow=True)
    [message] = flash(response)
    assert message.startswith("hours: must not end past")
    assert not Operation.objects.filter(kind=EnvKind.ENV_EXTEND).exists()


@pytest.mark.parametrize("hours", ["168.01", *NOT_HOURS, ""])
def test_it_refuses_an_extension_that_is_not_a_number_of_hours_in_range(client, alice, make_env, db_state,
                                                                         hours):
    env = make_env(alice)
    client.force_login(alice)
    before = db_state()
    response = client.post(url("envs:extend", env), {"hours": hours}, follow=True)
    assert response.redirect_chain[-1] == (url("envs:detail", env), 302)
    assert flash(response) == ["Extend by (hours): must be a number of hours between 0.01 and 168"]
    assert db_state() == before


def test_it_asks_to_retry_an_action_that_lost_a_race(client, alice, make_env, monkeypatch, db_state):
    env = make_env(alice)
    monkeypatch.setattr(services, "env_destroy", lose_a_race)
    client.force_login(alice)
    before = db_state()
    response = client.post(url("envs:destroy", env), {"confirm": env.name}, follow=True)
    assert response.redirect_chain[-1] == (url("envs:detail", env), 302)
    assert flash(response) == [RETRY]
    assert db_state() == before


def test_it_lets_a_bug_through_rather_than_call_it_a_refusal(client, alice, make_env, monkeypatch):
    env = make_env(alice)
    monkeypatch.setattr(services, "env_destroy", lambda **_: 1 / 0)
    client.force_login(alice)
    with pytest.raises(ZeroDivisionError):  # a 500, logged, as any bug
        client.post(url("envs:destroy", env), {"confirm": env.name})


def test_it_destroys_only_after_the_name_is_typed(client, alice, make_env):
    env = make_env(alice)
    client.force_login(alice)
    response = client.post(url("envs:destroy", env), {"confirm": "nope"}, follow=True)
    assert any("type the Env's name" in m for m in flash(response))
    env.refresh_from_db()
    assert env.status == Env.Status.ACTIVE


@pytest.mark.parametrize("name", ACTIONS)
def test_it_refuses_get_on_an_action(client, alice, make_env, name):
    env = make_env(alice)
    client.force_login(alice)
    assert client.get(url(name, env)).status_code == 405


@pytest.mark.parametrize("name", ACTIONS)
def test_it_rejects_an_action_without_a_csrf_token(alice, make_env, name):
    env = make_env(alice)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(url(name, env), {"hours": "1", "deny": "1", "confirm": env.name})
    assert response.status_code == 403
    assert not Operation.objects.exclude(kind=EnvKind.ENV_CREATE).exists()


def test_it_rejects_the_create_form_without_a_csrf_token(alice, template):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(url("envs:create"), create_data(template)).status_code == 403
    assert not Env.objects.exists()


def test_it_accepts_an_action_with_the_csrf_token_from_the_page(alice, make_env):
    env = make_env(alice)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    page = client.get(url("envs:detail", env))
    token = page.context["csrf_token"]
    response = client.post(url("envs:stop", env), {"csrfmiddlewaretoken": str(token)})
    assert response.status_code == 302


# --- cooldown --------------------------------------------------------------------------


def test_it_shows_the_cooldown_as_available_in_n_seconds(client, alice, make_env, settings, time_machine):
    time_machine.move_to(T0, tick=False)
    env = make_env(alice)  # creating it counts as a management operation
    settings.TT_MGMT_COOLDOWN = 60
    time_machine.move_to(T0.replace(second=15), tick=False)
    client.force_login(alice)
    body = client.get(url("envs:detail", env)).content.decode()
    assert "available in 45 s" in body
    assert "disabled" in body.split("Stop all")[0].rsplit("<button", 1)[1]
    assert "available in 45 s" in client.get(url("envs:list")).content.decode()


def test_it_explains_a_refusal_by_the_cooldown(client, alice, make_env, settings, time_machine):
    time_machine.move_to(T0, tick=False)
    env = make_env(alice)
    settings.TT_MGMT_COOLDOWN = 60
    client.force_login(alice)
    response = client.post(url("envs:stop", env), follow=True)
    assert any("available in 60 s" in m for m in flash(response))
    assert not Operation.objects.filter(kind=EnvKind.ENV_STOP).exists()


def test_it_checks_a_vm_to_add_before_the_cooldown(client, alice, make_env, template, settings, time_machine):
    time_machine.move_to(T0, tick=False)
    env = make_env(alice)
    settings.TT_MGMT_COOLDOWN = 60
    client.force_login(alice)
    # Invalid input is reported as such, cooldown or not: waiting would not fix it.
    response = client.post(url("envs:add_vm", env), add_vm_data(template, name="Not A Label"))
    assert "lower-case" in response.context["form"].errors["name"][0]
    assert not response.context["form"].non_field_errors()
    # Valid input meets the cooldown, with when to retry.
    response = client.post(url("envs:add_vm", env), add_vm_data(template))
    assert "60 s" in response.context["form"].non_field_errors()[0]
    assert not Operation.objects.filter(kind=VmKind.VM_ADD).exists()


def test_it_shows_no_cooldown_once_it_has_passed(client, alice, make_env, settings, time_machine):
    time_machine.move_to(T0, tick=False)
    env = make_env(alice)
    settings.TT_MGMT_COOLDOWN = 60
    time_machine.move_to(T0.replace(minute=5), tick=False)
    client.force_login(alice)
    assert "available in" not in client.get(url("envs:detail", env)).content.decode()


# --- the operations partial ------------------------------------------------------------


def test_it_polls_the_operations_while_one_runs(client, alice, make_env):
    env = make_env(alice)
    services.env_stop(env=env, by=alice)  # queued: its task never runs here
    Operation.objects.filter(kind=EnvKind.ENV_STOP).update(
        status=Operation.Status.RUNNING, progress=40, log="12:00:00 vm0: shutting down\n"
    )
    client.force_login(alice)
    body = client.get(url("envs:operations", env), HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-trigger="every 2s"' in body and url("envs:operations", env) in body
    assert 'value="40"' in body and "vm0: shutting down" in body
    # The full page embeds the same polling partial.
    assert 'hx-trigger="every 2s"' in client.get(url("envs:detail", env)).content.decode()
    assert "attempt" not in body


def test_it_says_when_a_running_operation_was_taken_over(client, alice, make_env):
    env = make_env(alice)
    services.env_stop(env=env, by=alice)
    Operation.objects.filter(kind=EnvKind.ENV_STOP).update(status=Operation.Status.RUNNING, attempt=2)
    client.force_login(alice)
    body = client.get(url("envs:operations", env), HTTP_HX_REQUEST="true").content.decode()
    assert "attempt 2" in body and "another took it over" in body


def test_it_stops_polling_when_nothing_runs(client, alice, make_env):
    env = make_env(alice)
    client.force_login(alice)
    response = client.get(url("envs:operations", env), HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert "hx-get" not in body and "every 2s" not in body
    assert response["HX-Trigger"] == "tt-ops-finished"  # the page refreshes its VMs once
    assert "every 2s" not in client.get(url("envs:detail", env)).content.decode()


def test_it_shows_a_failed_operation_with_its_error(client, alice, make_env):
    env = make_env(alice)
    Operation.objects.create(env=env, kind=EnvKind.ENV_STOP, status=Operation.Status.FAILED,
                             progress=50, error_code="stop_vm", error_message="the guest would not stop",
                             requested_by=alice, target=env.name)
    client.force_login(alice)
    body = client.get(url("envs:operations", env)).content.decode()
    assert "stop_vm" in body and "the guest would not stop" in body and "failed" in body
    assert 'value="50"' in body


def test_it_escapes_what_an_operation_says(client, alice, make_env):
    env = make_env(alice)
    Operation.objects.create(env=env, kind=EnvKind.ENV_STOP, status=Operation.Status.RUNNING, attempt=2,
                             progress=7, log="step 1\nwaiting for <vm0> & co\n", error_code="stop_vm",
                             error_message='the guest said "<no>"', requested_by=alice, target="<t>")
    client.force_login(alice)
    body = client.get(url("envs:operations", env)).content.decode()
    assert "waiting for &lt;vm0&gt; &amp; co" in body and "<vm0>" not in body
    assert "the guest said &quot;&lt;no&gt;&quot;" in body and "<code>&lt;t&gt;</code>" in body
    assert 'value="7">7%</progress>' in body and "attempt 2" in body


# --- a fixed number of queries -----------------------------------------------------------


def count_queries(client, target: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(target).status_code == 200
    return len(queries)


def test_it_lists_envs_in_constant_queries(client, alice, make_env):
    client.force_login(alice)
    make_env(alice, name="one", vms=1)
    few = count_queries(client, url("envs:list"))
    make_env(alice, name="two", vms=3)
    make_env(alice, name="three", vms=4)
    assert count_queries(client, url("envs:list")) == few


def test_it_shows_an_env_in_constant_queries(client, alice, make_env, template, run_tasks):
    client.force_login(alice)
    specs = [NewVm(name="vm0", template=template.name, ports=[22, 80])]
    env = make_env(alice, vms=specs)
    few = count_queries(client, url("envs:detail", env))
    from vms.services import vm_add

    for i in range(1, 6):
        with run_tasks():
            spec = NewVm(name=f"vm{i}", template=template.name, ports=[22, 80, "53/udp"])
            vm_add(env=env, by=alice, spec=spec)
    vms = list(env.vms.all())
    assert len(vms) == 6
    for vm in vms[:3]:
        Snapshot.objects.create(vm=vm, name="s1", status=Snapshot.Status.READY)
        Snapshot.objects.create(vm=vm, name="s2", status=Snapshot.Status.READY)
    assert count_queries(client, url("envs:detail", env)) == few
