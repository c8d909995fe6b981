"""Every bound the API documents, at its limit (taken) and one past it (a 400 naming the
field, nothing changed), and the errors of the contract around them: 422 for rules the
schema cannot state, idempotency keys bound to their request, JSON errors for any path
and query. The numbers come from ttportal.limits, as the server's and the schema's do."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from envs.models import Env
from operations.models import Operation
from tests.api_support import client_for
from tests.support import T0
from ttportal import limits
from vms.models import Vm

pytestmark = pytest.mark.usefixtures("frozen_clock", "quotas_out_of_the_way")

# These are the API's own bounds (a VM of 64 vCPUs, the longest extension): a user's quota,
# a rule of its own (tests/*/test_quotas.py), must not be what refuses them.
VM = {"name": "web", "template": "tt/busybox"}


def refused(response, field: str, status: int = 400) -> str:
    assert response.status_code == status, response.content
    body = response.json()
    assert (body["code"], body["field"]) == ("invalid", field)
    assert body["errors"][field] == [body["message"]]
    return body["message"]


def ports(n: int) -> list[int]:
    return list(range(1, n + 1))


@pytest.fixture
def vm(alice, make_env) -> Vm:
    return make_env(alice).vms.get()


# --- POST /api/envs/: at the limit it is taken, one past it is refused -----------------

@pytest.mark.parametrize(("vm_at_limit", "vm_past_limit", "field"), [
    ({"cpu_num": 1}, {"cpu_num": 0}, "vms[0].cpu_num"),
    ({"cpu_num": limits.CPU_MAX}, {"cpu_num": limits.CPU_MAX + 1}, "vms[0].cpu_num"),
    ({"mem_mb": limits.MEM_MAX_MB}, {"mem_mb": limits.MEM_MAX_MB + 1}, "vms[0].mem_mb"),
    ({"disk_mb": limits.DISK_MAX_MB}, {"disk_mb": limits.DISK_MAX_MB + 1}, "vms[0].disk_mb"),
    ({"ports": ports(limits.ports_max())}, {"ports": ports(limits.ports_max() + 1)}, "vms[0].ports"),
    ({"ports": [65535]}, {"ports": [65536]}, "vms[0].ports[0]"),
    ({"ports": ["65535/udp"]}, {"ports": ["65536/udp"]}, "vms[0].ports[0]"),
    ({"ports": [{"inner_port": 1}]}, {"ports": [{"inner_port": 0}]}, "vms[0].ports[0]"),
    ({"name": "a" * limits.NAME_MAX}, {"name": "a" * (limits.NAME_MAX + 1)}, "vms[0].name"),
])
def test_each_vm_bound_is_taken_at_its_limit_and_refused_past_it(
    alice, template, db_state, settings, vm_at_limit, vm_past_limit, field
):
    api = client_for(alice)
    before = db_state()
    refused(api.post("/api/envs/", {"name": "past", "vms": [{**VM, **vm_past_limit}]}), field)
    assert db_state() == before

    response = api.post("/api/envs/", {"name": "at", "vms": [{**VM, **vm_at_limit}]})
    # Valid as a request: what may still refuse it is the node's room (409), never a 400.
    assert response.status_code in (202, 409), response.content
    if response.status_code == 409:
        assert response.json()["code"] == "no_capacity"


def test_an_env_holds_at_most_the_configured_number_of_vms(alice, template, settings, db_state):
    settings.TT_MAX_VMS_PER_ENV = 3
    api = client_for(alice)
    too_many = [{**VM, "name": f"vm{i}"} for i in range(4)]
    before = db_state()
    assert "at most 3" in refused(api.post("/api/envs/", {"name": "big", "vms": too_many}), "vms")
    refused(api.post("/api/envs/", {"name": "none", "vms": []}), "vms")
    assert db_state() == before
    assert api.post("/api/envs/", {"name": "big", "vms": too_many[:3]}).status_code == 202


@pytest.mark.parametrize("lifetime", [0, -1, limits.LIFETIME_MIN - 1, 10**12, 10**30, 1e12, 3600.5, "3600",
                                      True])
def test_a_lifetime_out_of_range_or_not_an_integer_is_a_400_never_an_overflow(
    alice, template, db_state, settings, lifetime
):
    before = db_state()
    response = client_for(alice).post("/api/envs/", {"name": "x", "vms": [VM], "lifetime": lifetime})
    message = refused(response, "lifetime")
    assert message == f"must be an integer between 1 and {settings.TT_MAX_ENV_LIFETIME} seconds"
    assert db_state() == before


def test_the_longest_lifetime_is_taken_and_one_second_more_is_not(alice, template, settings):
    api = client_for(alice)
    longest = settings.TT_MAX_ENV_LIFETIME
    refused(api.post("/api/envs/", {"name": "x", "vms": [VM], "lifetime": longest + 1}), "lifetime")
    response = api.post("/api/envs/", {"name": "x", "vms": [VM], "lifetime": longest})
    assert response.status_code == 202
    assert Env.objects.get().end_at == T0 + timedelta(seconds=longest)


@pytest.mark.parametrize(("end_at", "status"), [
    ("2026-12-02T00:00:00", 400),  # no UTC offset
    ("tomorrow", 400),
    ("0001-01-01T00:00:00+01:00", 400),  # before year 1 in UTC: no such date
    ("9999-12-31T23:59:59Z", 422),  # a date, but past the longest lifetime
    ("2000-01-01T00:00:00Z", 422),  # a date, but in the past
])
def test_an_end_is_checked_as_a_date_then_against_the_clock(alice, template, db_state, end_at, status):
    before = db_state()
    response = client_for(alice).post("/api/envs/", {"name": "x", "vms": [VM], "end_at": end_at})
    refused(response, "end_at", status)
    assert db_state() == before


def test_the_latest_end_is_taken_and_one_second_later_is_not(alice, template, settings):
    api = client_for(alice)
    latest = T0 + timedelta(seconds=settings.TT_MAX_ENV_LIFETIME)
    later = (latest + timedelta(seconds=1)).isoformat()
    refused(api.post("/api/envs/", {"name": "x", "vms": [VM], "end_at": later}), "end_at", 422)
    response = api.post("/api/envs/", {"name": "x", "vms": [VM], "end_at": latest.isoformat()})
    assert response.status_code == 202
    assert Env.objects.get().end_at == latest


def test_an_end_and_a_lifetime_together_are_refused_as_such(alice, template, db_state):
    before = db_state()
    response = client_for(alice).post("/api/envs/", {"name": "x", "vms": [VM], "lifetime": 60,
                                                     "end_at": "2000-01-01T00:00:00Z"})
    assert refused(response, "end_at") == "give end_at or lifetime, not both"
    assert db_state() == before


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x", "vms": [VM], "lifetme": 60}, "lifetme"),
    ({"name": "x", "vms": [{**VM, "cpus": 2}]}, "vms[0].cpus"),
    ({"name": "x", "vms": [{**VM, "ports": [{"inner_port": 80, "proto": "udp"}]}]}, "vms[0].ports[0]"),
    ({"name": "web\n", "vms": [VM]}, "name"),
    ({"name": "x", "vms": [{**VM, "template": "tt/busybox\x00"}]}, "vms[0].template"),
    ({"name": "x", "vms": [{**VM, "cpu_num": 2.0}]}, "vms[0].cpu_num"),
    ({"name": "x", "vms": [{**VM, "keep_image": "true"}]}, "vms[0].keep_image"),
])
def test_a_field_the_api_does_not_know_or_a_loose_type_is_refused(alice, template, db_state, body, field):
    before = db_state()
    refused(client_for(alice).post("/api/envs/", body), field)
    assert db_state() == before


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x", "vms": [{**VM, "template": "no/such"}]}, "vms[0].template"),
    ({"name": "x", "vms": [{**VM, "net_kind": "flat", "ports": [80]}]}, "vms[0].ports"),
    ({"name": "x", "vms": [VM, VM]}, "vms[1].name"),
])
def test_a_rule_that_depends_on_data_is_a_422_naming_the_field(alice, template, db_state, body, field):
    before = db_state()
    refused(client_for(alice).post("/api/envs/", body), field, 422)
    assert db_state() == before


# --- extend ---------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "field", "status"), [
    ({"lifetime": 10**12}, "lifetime", 400),
    ({"lifetime": 0}, "lifetime", 400),
    ({}, "end_at", 400),
    ({"lifetime": 60, "end_at": "2030-01-01T00:00:00Z"}, "end_at", 400),
    ({"end_at": "9999-12-31T23:59:59Z"}, "end_at", 422),
    ({"end_at": "2000-01-01T00:00:00Z"}, "end_at", 422),
])
def test_an_extend_out_of_range_names_its_field(alice, make_env, db_state, body, field, status):
    env = make_env(alice)
    before = db_state()
    refused(client_for(alice).post(f"/api/envs/{env.pk}/extend/", body), field, status)
    assert db_state() == before


def test_an_extend_to_the_longest_lifetime_is_taken(alice, make_env, settings):
    env = make_env(alice)
    longest = settings.TT_MAX_ENV_LIFETIME
    api = client_for(alice)
    refused(api.post(f"/api/envs/{env.pk}/extend/", {"lifetime": longest + 1}), "lifetime")
    assert api.post(f"/api/envs/{env.pk}/extend/", {"lifetime": longest}).status_code == 202
    env.refresh_from_db()
    assert env.end_at == T0 + timedelta(seconds=longest)


# --- a VM's ports and blacklist, snapshots, tokens ------------------------------------

def test_a_vm_takes_the_most_ports_and_not_one_more(alice, vm, node, db_state, run_tasks):
    node.port_max = node.port_min + 2 * limits.ports_max()  # room for them all
    node.save()
    api = client_for(alice)
    before = db_state()
    message = refused(api.put(f"/api/vms/{vm.pk}/ports/", {"ports": ports(limits.ports_max() + 1)}), "ports")
    assert message == limits.ports_rule()
    assert db_state() == before
    with run_tasks():
        assert api.put(f"/api/vms/{vm.pk}/ports/", {"ports": ports(limits.ports_max())}).status_code == 202
    assert vm.port_mappings.count() == limits.ports_max()


def test_a_vm_takes_the_longest_blacklist_and_not_one_more(alice, vm, db_state, run_tasks):
    api = client_for(alice)
    addresses = [f"192.0.{i // 256}.{i % 256}" for i in range(limits.BLACKLIST_MAX + 1)]
    before = db_state()
    refused(api.put(f"/api/vms/{vm.pk}/blacklist/", {"addresses": addresses}), "addresses")
    refused(api.put(f"/api/vms/{vm.pk}/blacklist/", {"addresses": ["192.0.2.256"]}), "addresses[0]")
    assert db_state() == before
    with run_tasks():
        response = api.put(f"/api/vms/{vm.pk}/blacklist/", {"addresses": addresses[:-1]})
    assert response.status_code == 202
    vm.refresh_from_db()
    assert len(vm.net_blacklist) == limits.BLACKLIST_MAX


@pytest.mark.parametrize(("at_limit", "past_limit"), [
    (limits.SNAPSHOT_LIFE_MIN, limits.SNAPSHOT_LIFE_MIN - 1),
    (limits.SNAPSHOT_LIFE_MAX, limits.SNAPSHOT_LIFE_MAX + 1),
])
def test_a_snapshot_life_time_is_bounded(alice, vm, db_state, at_limit, past_limit):
    api = client_for(alice)
    before = db_state()
    refused(api.post(f"/api/vms/{vm.pk}/snapshots/", {"name": "s", "life_time": past_limit}), "life_time")
    assert db_state() == before
    assert api.post(f"/api/vms/{vm.pk}/snapshots/", {"name": "s", "life_time": at_limit}).status_code == 202


@pytest.mark.parametrize("which", ["min", "max"])
def test_a_token_lifetime_is_bounded(alice, settings, which):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"alice:pw-alice").decode())
    at_limit = limits.TOKEN_TTL_MIN if which == "min" else settings.TT_API_TOKEN_MAX_TTL
    past_limit = at_limit - 1 if which == "min" else at_limit + 1
    refused(api.post("/api/tokens/", {"name": "t", "expires_in": past_limit}), "expires_in")
    assert api.post("/api/tokens/", {"name": "t", "expires_in": at_limit}).status_code == 201


# --- lists: page, page_size, ordering and filters -------------------------------------

@pytest.mark.parametrize(("query", "field"), [
    (f"page_size={limits.PAGE_SIZE_MAX + 1}", "page_size"),
    ("page_size=0", "page_size"),
    ("page_size=ten", "page_size"),
    ("page_size=10&page_size=20", "page_size"),
    ("page=0", "page"),
    ("page=last", "page"),
    ("ordering=secret", "ordering"),
    ("live=abc", "live"),
    ("live=", "live"),
    ("status=", "status"),
    ("status=sleeping", "status"),
    ("name=a%00b", "name"),
])
def test_a_bad_query_parameter_is_a_400_naming_it(alice, make_env, query, field):
    make_env(alice)
    refused(client_for(alice).get(f"/api/envs/?{query}"), field)


@pytest.mark.parametrize("value", ["0", "-1", "1.5", str(limits.ID_MAX + 1), ""])
def test_an_id_filter_takes_positive_64_bit_integers_only(alice, make_env, value):
    make_env(alice)
    refused(client_for(alice).get(f"/api/vms/?env={value}"), "env")


def test_the_largest_page_is_served_and_a_page_past_the_end_is_a_json_404(alice, make_env):
    env = make_env(alice)
    api = client_for(alice)
    response = api.get(f"/api/vms/?page_size={limits.PAGE_SIZE_MAX}&env={env.pk}&env_id=ignored")
    assert response.status_code == 200
    assert response.json()["count"] == 1
    response = api.get("/api/vms/?page=99")
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


@pytest.mark.parametrize(("method", "path"), [
    ("get", "/api/vms/0.5/"), ("get", "/api/vms/99999999999999999999999/"), ("get", "/api/nothing/"),
    ("post", "/api/envs/abc/extend/"), ("post", "/api/vms/-1/start/"), ("post", "/api/nothing/"),
])
def test_any_path_under_the_api_answers_json(alice, db, method, path):
    response = getattr(client_for(alice), method)(path, {})
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "not_found"


def test_a_session_post_to_no_route_is_a_json_404_not_a_csrf_page(alice, client, db):
    client.force_login(alice)
    response = client.post("/api/vms/0.5/start/", {})
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


def test_a_session_post_without_its_csrf_token_is_a_json_403(alice, make_env, db_state):
    from django.test import Client

    env = make_env(alice)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    before = db_state()
    response = browser.post(f"/api/envs/{env.pk}/stop/")
    assert (response.status_code, response.json()["code"]) == (403, "forbidden")
    assert db_state() == before


# --- idempotency keys -----------------------------------------------------------------

def test_a_key_reused_for_another_body_is_refused_and_the_request_does_not_run(alice, template, db_state):
    api = client_for(alice)
    first = api.post("/api/envs/", {"name": "one", "vms": [VM]}, HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == 202
    before = db_state()
    response = api.post("/api/envs/", {"name": "two", "vms": [VM]}, HTTP_IDEMPOTENCY_KEY="k1")
    assert response.status_code == 422
    body = response.json()
    assert (body["code"], body["field"]) == ("idempotency_key_reused", "Idempotency-Key")
    assert db_state() == before
    again = api.post("/api/envs/", {"name": "one", "vms": [VM]}, HTTP_IDEMPOTENCY_KEY="k1")
    assert (again.status_code, again.json()["id"]) == (202, first.json()["id"])


def test_a_key_reused_on_another_path_is_refused(alice, make_env, db_state):
    env = make_env(alice)
    api = client_for(alice)
    assert api.post(f"/api/envs/{env.pk}/stop/", HTTP_IDEMPOTENCY_KEY="k2").status_code == 202
    before = db_state()
    response = api.post(f"/api/envs/{env.pk}/destroy/", HTTP_IDEMPOTENCY_KEY="k2")
    assert (response.status_code, response.json()["code"]) == (422, "idempotency_key_reused")
    assert db_state() == before
    assert Operation.objects.filter(kind="env_destroy").count() == 0


def test_another_users_key_is_theirs(alice, bob, make_env):
    mine, theirs = make_env(alice, name="mine"), make_env(bob, name="theirs")
    assert client_for(alice).post(f"/api/envs/{mine.pk}/stop/", HTTP_IDEMPOTENCY_KEY="k3").status_code == 202
    assert client_for(bob).post(f"/api/envs/{theirs.pk}/stop/", HTTP_IDEMPOTENCY_KEY="k3").status_code == 202


# --- no-ops ---------------------------------------------------------------------------

def test_asking_for_what_already_is_answers_200_with_the_state_and_records_nothing(alice, make_env, db_state):
    env = make_env(alice)
    vm = env.vms.get()
    api = client_for(alice)
    before = db_state()
    response = api.post(f"/api/envs/{env.pk}/start/")
    body = response.json()
    assert (response.status_code, body["id"], body["is_stopped"]) == (200, env.pk, False)
    response = api.post(f"/api/envs/{env.pk}/deny-outgoing/", {"deny": False})
    assert (response.status_code, response.json()["deny_outgoing"]) == (200, False)
    response = api.post(f"/api/vms/{vm.pk}/start/")
    assert (response.status_code, response.json()["status"]) == (200, "running")
    assert api.put(f"/api/vms/{vm.pk}/blacklist/", {"addresses": []}).status_code == 200
    assert db_state() == before
