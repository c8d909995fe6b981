"""The Env and Operation endpoints: happy paths, error bodies, idempotency, filters,
and a constant number of queries per list whatever the number of VMs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from envs import services
from envs.models import Env
from operations.models import Operation
from tests.api_support import client_for
from tests.support import RETRY, T0, lose_a_race
from vms.models import Vm

pytestmark = pytest.mark.usefixtures("frozen_clock")

NEW_VM = {"name": "web", "template": "tt/busybox", "ports": [80, "53/udp"]}


def test_it_creates_an_env_and_boots_its_vms(alice, template, run_tasks, settings):
    api = client_for(alice)
    with run_tasks():
        db_vm = {"name": "db", "template": "tt/busybox", "cpu_num": 2, "mem_mb": 512}
        response = api.post("/api/envs/", {"name": "demo", "vms": [NEW_VM, db_vm]})
    assert response.status_code == 202
    op = response.json()
    assert (op["kind"], op["requested_by"]) == ("env_create", "alice")

    polled = api.get(f"/api/operations/{op['id']}/").json()
    assert (polled["status"], polled["progress"], polled["is_done"]) == ("succeeded", 100, True)
    assert "web: booting" in polled["log"]

    env = api.get(f"/api/envs/{op['env']}/").json()
    assert (env["name"], env["owner"], env["status"]) == ("demo", "alice", "active")
    assert env["end_at"] == (T0 + timedelta(seconds=settings.TT_DEFAULT_ENV_LIFETIME)).isoformat().replace(
        "+00:00", "Z")
    assert env["seconds_left"] == settings.TT_DEFAULT_ENV_LIFETIME
    assert sorted((vm["name"], vm["status"]) for vm in env["vms"]) == [("db", "running"), ("web", "running")]


def test_it_takes_a_lifetime_and_egress_policy(alice, template):
    response = client_for(alice).post("/api/envs/", {"name": "short", "vms": [NEW_VM], "lifetime": 600,
                                                     "deny_outgoing": True})
    assert response.status_code == 202
    env = Env.objects.get(pk=response.json()["env"])
    assert (env.end_at, env.deny_outgoing) == (T0 + timedelta(seconds=600), True)


def test_it_lets_staff_create_an_env_for_someone(alice, olga, template):
    response = client_for(olga).post("/api/envs/", {"name": "for-alice", "vms": [NEW_VM], "owner": "alice"})
    assert response.status_code == 202
    op = Operation.objects.get(pk=response.json()["id"])
    assert (op.env.owner, op.requested_by) == (alice, olga)


@pytest.mark.parametrize("owner", ["bob", "nobody-by-this-name"])
def test_it_refuses_to_create_for_someone_else_without_telling_who_exists(alice, bob, template, owner,
                                                                           db_state):
    before = db_state()
    response = client_for(alice).post("/api/envs/", {"name": "x", "vms": [NEW_VM], "owner": owner})
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert db_state() == before


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "Not A Label", "vms": [NEW_VM]}, "name"),
    ({"name": "demo", "vms": []}, "vms"),
    ({"name": "demo"}, "vms"),
    ({"name": "demo", "vms": [{**NEW_VM, "cpu_num": "many"}]}, "vms[0].cpu_num"),
    ({"name": "demo", "vms": [{**NEW_VM, "ports": [70000]}]}, "vms[0].ports[0]"),
    ({"name": "demo", "vms": [NEW_VM], "lifetime": -5}, "lifetime"),
    ({"name": "demo", "vms": [NEW_VM], "lifetime": 10**9}, "lifetime"),
])
def test_it_answers_bad_input_with_the_field_and_the_rule(alice, template, db_state, body, field):
    before = db_state()
    response = client_for(alice).post("/api/envs/", body)
    assert response.status_code == 400
    error = response.json()
    assert (error["code"], error["field"]) == ("invalid", field)
    assert error["message"]
    assert error["errors"][field] == [error["message"]]
    assert db_state() == before


@pytest.mark.parametrize(("vm", "field"), [
    ({"template": "no/such"}, "vms[0].template"),
    ({"mem_mb": 1}, "vms[0].mem_mb"),  # within the schema's bounds, below the template's minimum
])
def test_it_answers_a_rule_the_schema_cannot_state_with_422(alice, template, db_state, vm, field):
    before = db_state()
    response = client_for(alice).post("/api/envs/", {"name": "demo", "vms": [{**NEW_VM, **vm}]})
    assert response.status_code == 422
    assert (response.json()["code"], response.json()["field"]) == ("invalid", field)
    assert db_state() == before


def test_it_answers_malformed_json_with_a_code(alice, db):
    response = client_for(alice).post("/api/envs/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


def test_it_extends_an_env(alice, make_env):
    env = make_env(alice)
    response = client_for(alice).post(f"/api/envs/{env.pk}/extend/", {"lifetime": 3600 * 24})
    assert response.status_code == 202
    assert (response.json()["kind"], response.json()["status"]) == ("env_extend", "succeeded")
    env.refresh_from_db()
    assert env.end_at == T0 + timedelta(days=1)
    response = client_for(alice).post(f"/api/envs/{env.pk}/extend/", {"end_at": "2030-01-01T18:00:00Z"})
    env.refresh_from_db()
    assert env.end_at == T0 + timedelta(hours=6)


def test_it_refuses_an_extend_without_an_end(alice, make_env):
    env = make_env(alice)
    response = client_for(alice).post(f"/api/envs/{env.pk}/extend/", {})
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("invalid", "end_at")


def test_it_stops_and_starts_an_env(alice, make_env, run_tasks):
    env = make_env(alice, vms=2)
    api = client_for(alice)
    with run_tasks():
        assert api.post(f"/api/envs/{env.pk}/stop/").status_code == 202
    assert set(env.vms.values_list("status", flat=True)) == {"stopped"}
    assert api.get(f"/api/envs/{env.pk}/").json()["is_stopped"] is True
    with run_tasks():
        assert api.post(f"/api/envs/{env.pk}/start/").status_code == 202
    assert set(env.vms.values_list("status", flat=True)) == {"running"}


def test_it_denies_outgoing_traffic(alice, make_env, run_tasks, firewall):
    env = make_env(alice)
    with run_tasks():
        response = client_for(alice).post(f"/api/envs/{env.pk}/deny-outgoing/", {"deny": True})
    assert response.status_code == 202
    env.refresh_from_db()
    assert env.deny_outgoing is True
    assert firewall.denied == {env.vms.get().ip}


@pytest.mark.parametrize("body", [{}, {"deny": "perhaps"}])
def test_it_needs_a_boolean_to_deny_outgoing(alice, make_env, body):
    env = make_env(alice)
    response = client_for(alice).post(f"/api/envs/{env.pk}/deny-outgoing/", body)
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("invalid", "deny")


def test_it_destroys_an_env(alice, make_env, run_tasks):
    env = make_env(alice)
    with run_tasks():
        response = client_for(alice).post(f"/api/envs/{env.pk}/destroy/")
    assert response.status_code == 202
    env.refresh_from_db()
    assert env.status == "destroyed"
    assert set(env.vms.values_list("status", flat=True)) == {"destroyed"}


def test_it_adds_a_vm_to_an_env(alice, make_env, run_tasks):
    env = make_env(alice)
    with run_tasks():
        body = {"name": "extra", "template": "tt/busybox", "ports": [{"protocol": "udp", "inner_port": 53}]}
        response = client_for(alice).post(f"/api/envs/{env.pk}/vms/", body)
    assert response.status_code == 202
    vm = Vm.objects.get(pk=response.json()["vm"])
    assert (vm.env, vm.name, vm.status) == (env, "extra", "running")
    assert [(p.protocol, p.inner_port) for p in vm.port_mappings.all()] == [("udp", 53)]


def test_it_names_the_field_of_a_bad_vm_to_add(alice, make_env):
    env = make_env(alice)
    response = client_for(alice).post(f"/api/envs/{env.pk}/vms/", {"name": "vm0", "template": "tt/busybox"})
    assert response.status_code == 422  # the name is well formed, but taken
    assert (response.json()["code"], response.json()["field"]) == ("invalid", "name")


def test_it_answers_an_illegal_state_with_409(alice, make_env, run_tasks):
    env = make_env(alice)
    with run_tasks():
        client_for(alice).post(f"/api/envs/{env.pk}/destroy/")
    response = client_for(alice).post(f"/api/envs/{env.pk}/stop/")
    assert response.status_code == 409
    assert response.json()["code"] == "illegal_state"
    assert "destroyed" in response.json()["message"]


def test_it_answers_a_race_the_database_caught_with_409_retry(alice, make_env, monkeypatch, db_state):
    env = make_env(alice)
    monkeypatch.setattr(services, "env_stop", lose_a_race)
    before = db_state()
    response = client_for(alice).post(f"/api/envs/{env.pk}/stop/")
    assert response.status_code == 409
    assert response.json() == {"code": "illegal_state", "message": RETRY}
    assert db_state() == before


def test_it_answers_the_cooldown_with_429_and_retry_after(alice, make_env, settings, time_machine, db_state,
                                                           run_tasks):
    env = make_env(alice)
    settings.TT_MGMT_COOLDOWN = 60
    time_machine.move_to(T0 + timedelta(seconds=60), tick=False)
    api = client_for(alice)
    with run_tasks():
        assert api.post(f"/api/envs/{env.pk}/stop/").status_code == 202
    time_machine.move_to(T0 + timedelta(seconds=75), tick=False)
    before = db_state()

    response = api.post(f"/api/envs/{env.pk}/start/")

    assert response.status_code == 429
    assert response["Retry-After"] == "45"
    assert response.json()["code"] == "cooldown"
    assert response.json()["retry_after"] == 45
    assert db_state() == before
    assert api.get(f"/api/envs/{env.pk}/").json()["cooldown_remaining"] == 45


def test_it_returns_the_same_operation_for_the_same_idempotency_key(alice, make_env):
    env = make_env(alice)
    api = client_for(alice)
    first = api.post(f"/api/envs/{env.pk}/stop/", HTTP_IDEMPOTENCY_KEY="stop-1")
    again = api.post(f"/api/envs/{env.pk}/stop/", HTTP_IDEMPOTENCY_KEY="stop-1")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert first.json()["idempotency_key"] == "stop-1"
    assert Operation.objects.filter(kind="env_stop").count() == 1


def test_it_creates_one_env_for_a_repeated_create(alice, template):
    api = client_for(alice)
    body = {"name": "once", "vms": [NEW_VM]}
    first = api.post("/api/envs/", body, HTTP_IDEMPOTENCY_KEY="create-once")
    again = api.post("/api/envs/", body, HTTP_IDEMPOTENCY_KEY="create-once")
    assert first.json()["id"] == again.json()["id"]
    assert Env.objects.filter(name="once").count() == 1


def test_it_refuses_an_overlong_idempotency_key(alice, make_env):
    env = make_env(alice)
    response = client_for(alice).post(f"/api/envs/{env.pk}/stop/", HTTP_IDEMPOTENCY_KEY="k" * 129)
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("invalid", "Idempotency-Key")


def test_it_filters_envs(alice, olga, make_env, run_tasks):
    make_env(alice, name="alpha")
    beta = make_env(alice, name="beta")
    with run_tasks():
        client_for(alice).post(f"/api/envs/{beta.pk}/destroy/")
    api = client_for(alice)

    def names(query):
        response = api.get(f"/api/envs/?{query}")
        assert response.status_code == 200, response.json()
        return sorted(e["name"] for e in response.json()["results"])

    assert names("") == ["alpha", "beta"]
    assert names("status=active") == ["alpha"]
    assert names("status=destroyed") == ["beta"]
    assert names("live=true") == ["alpha"]
    assert names("name=alp") == ["alpha"]
    assert names("ordering=-name") == ["alpha", "beta"]
    assert [e["name"] for e in api.get("/api/envs/?ordering=-name").json()["results"]] == ["beta", "alpha"]
    assert client_for(olga).get("/api/envs/?owner=alice").json()["count"] == 2
    assert client_for(olga).get("/api/envs/?owner=olga").json()["count"] == 0


def test_it_refuses_a_bad_filter_value(alice, db):
    response = client_for(alice).get("/api/envs/?status=sleeping")
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("invalid", "status")


def test_it_pages_lists(alice, make_env):
    for name in ("a", "b", "c"):
        make_env(alice, name=name)
    page = client_for(alice).get("/api/envs/?page_size=2").json()
    assert (page["count"], len(page["results"])) == (3, 2)
    assert "page=2" in page["next"]
    response = client_for(alice).get("/api/envs/?page=9")
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


def test_it_filters_operations(alice, make_env, run_tasks):
    one, two = make_env(alice, name="one"), make_env(alice, name="two")
    api = client_for(alice)
    api.post(f"/api/envs/{one.pk}/stop/")  # queued: its task has not run
    with run_tasks():
        api.post(f"/api/envs/{two.pk}/stop/")

    def kinds(query):
        return sorted((o["kind"], o["env"]) for o in api.get(f"/api/operations/?{query}").json()["results"])

    assert kinds("kind=env_stop") == [("env_stop", one.pk), ("env_stop", two.pk)]
    assert kinds("status=queued") == [("env_stop", one.pk)]
    assert kinds(f"env={two.pk}") == [("env_create", two.pk), ("env_stop", two.pk)]
    assert kinds(f"env={two.pk}&kind=env_create") == [("env_create", two.pk)]
    done = api.get(f"/api/operations/?env={two.pk}&kind=env_stop").json()["results"][0]
    assert (done["attempt"], done["status"]) == (1, "succeeded")  # one worker took it, once
    queued = api.get(f"/api/operations/?env={one.pk}&kind=env_stop").json()["results"][0]
    assert (queued["attempt"], queued["heartbeat_at"]) == (0, None)


def test_it_filters_by_others_ids_as_by_unknown_ones(alice, bob, make_env):
    bobs = make_env(bob, name="bobs")
    api = client_for(alice)
    for query in (f"env={bobs.pk}", "env=999999"):
        response = api.get(f"/api/operations/?{query}")
        assert (response.status_code, response.json()["count"]) == (200, 0)


def _count_queries(client, url) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


@pytest.mark.parametrize("url", ["/api/envs/", "/api/operations/", "/api/envs/{env}/"])
def test_it_lists_with_a_constant_number_of_queries(alice, make_env, run_tasks, url):
    api = client_for(alice)
    small = make_env(alice, name="small", vms=1)
    api.get("/api/envs/")  # the token's first use records it; later ones within a minute do not
    few = _count_queries(api, url.format(env=small.pk))

    big = make_env(alice, name="big", vms=6)
    make_env(alice, name="more", vms=3)
    with run_tasks():
        api.post(f"/api/envs/{big.pk}/stop/")
    many = _count_queries(api, url.format(env=big.pk))

    assert many == few
