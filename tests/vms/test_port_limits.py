"""Forwarded ports are bounded twice (issue 22: one user took all 10,000 ports of a node):
per VM by TT_MAX_PORTS_PER_VM, a rule of the request that the API schema states
(maxItems), and per owner by TT_QUOTA_PORTS, a quota counted over their live VMs like the
others. Each is taken at its limit and refused one past it, naming the field or the quota,
with nothing changed, on every path that adds ports: env_create (portal, API, admin),
vm_add, vm_set_ports and a create that takes a warm spare."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from accounts import quotas
from accounts.models import GroupQuota, UserQuota
from tests.api_support import client_for
from tests.quota_support import Outcome, add_vm, assert_refused, create_env
from tests.support import refused
from ttportal.errors import InvalidInput, QuotaExceeded
from vms import usage, warm
from vms.models import PortMapping, WarmPool
from vms.new_vms import NewVm
from vms.services import vm_set_ports


def vm_spec(template, name: str, ports: list) -> NewVm:
    return NewVm(name=name, template=template.name, ports=ports)


def says(limit: int, used: int, adds: int) -> str:
    return f"alice may have at most {limit} of forwarded ports; {used} in use, and this request adds {adds}"


# --- the owner's quota ------------------------------------------------------------------------


@pytest.mark.parametrize("interface", ["service", "portal", "api", "admin"])
def test_an_env_takes_the_ports_quota_exactly_and_not_one_more(interface, alice, template, settings,
                                                               db_state):
    settings.TT_QUOTA_PORTS = 4
    before = db_state()
    outcome = create_env(interface, alice, template, name="big",
                         vms=[vm_spec(template, "a", [22, 80]), vm_spec(template, "b", [22, 80, 443])])
    assert_refused(outcome, interface, quota="ports", limit=4, used=0, requested=5, says=says(4, 0, 5))
    assert db_state() == before

    outcome = create_env(interface, alice, template, name="fits",
                         vms=[vm_spec(template, "a", [22, 80]), vm_spec(template, "b", ["53/udp", 80])])
    assert outcome.accepted, outcome
    assert PortMapping.objects.filter(vm__env__owner=alice).count() == 4
    before = db_state()
    outcome = create_env(interface, alice, template, name="more", vms=[vm_spec(template, "c", [22])])
    assert_refused(outcome, interface, quota="ports", limit=4, used=4, requested=1, says=says(4, 4, 1))
    assert db_state() == before
    # A VM without ports adds nothing to this quota.
    assert create_env(interface, alice, template, name="bare", vms=[vm_spec(template, "d", [])]).accepted


@pytest.mark.parametrize("interface", ["service", "portal", "api"])
def test_adding_a_vm_counts_its_ports(interface, alice, make_env, template, settings, db_state):
    settings.TT_QUOTA_PORTS = 3
    env = make_env(alice, vms=[vm_spec(template, "web", [22, 80])])
    before = db_state()
    outcome = add_vm(interface, env, template, vm_spec(template, "more", [22, 80]))
    assert_refused(outcome, interface, quota="ports", limit=3, used=2, requested=2, says=says(3, 2, 2))
    assert db_state() == before
    assert add_vm(interface, env, template, vm_spec(template, "last", [22])).accepted
    assert usage.usage_of(alice).ports == 3


def set_ports(interface: str, vm, ports: list) -> Outcome:
    """vm_set_ports through `interface`, as the VM's owner."""
    owner = vm.env.owner
    if interface == "service":
        try:
            vm_set_ports(vm=vm, ports=ports, by=owner)
        except QuotaExceeded as exc:
            return Outcome(False, exc.message)
        return Outcome(True)
    if interface == "api":
        response = client_for(owner).put(f"/api/vms/{vm.pk}/ports/", {"ports": ports}, format="json")
        if response.status_code == 202:
            return Outcome(True, status=202)
        return Outcome(False, response.json().get("message", ""), response.json(), response.status_code)
    client = Client()
    client.force_login(owner)
    response = client.post(reverse("vms:ports", args=[vm.pk]), {"ports": ", ".join(map(str, ports))},
                           follow=True)
    errors = [str(m) for m in response.context["messages"] if m.level_tag == "error"]
    return Outcome(not errors, errors[0] if errors else "", status=response.status_code)


@pytest.mark.parametrize("interface", ["service", "portal", "api"])
def test_setting_ports_counts_only_what_it_adds(interface, alice, make_env, template, settings, db_state,
                                                run_tasks):
    settings.TT_QUOTA_PORTS = 3
    vm = make_env(alice, vms=[vm_spec(template, "web", [22, 80])]).vms.get()
    with run_tasks():
        assert set_ports(interface, vm, [22, 80, 443]).accepted  # 2 + 1: at the limit
    before = db_state()
    outcome = set_ports(interface, vm, [22, 80, 443, 8080])
    assert_refused(outcome, interface, quota="ports", limit=3, used=3, requested=1, says=says(3, 3, 1))
    assert db_state() == before
    with run_tasks():
        assert set_ports(interface, vm, [1, 2, 3]).accepted  # as many as before: nothing added
    settings.TT_QUOTA_PORTS = 1  # lowered below the use: giving ports back is still allowed
    with run_tasks():
        assert set_ports(interface, vm, [1]).accepted
    assert sorted(vm.port_mappings.values_list("inner_port", flat=True)) == [1]


def test_staff_setting_ports_are_bound_unless_they_say_otherwise(alice, olga, make_env, template, settings,
                                                                   db_state):
    settings.TT_QUOTA_PORTS = 1
    vm = make_env(alice, vms=[vm_spec(template, "web", [22])]).vms.get()
    with refused(db_state, QuotaExceeded) as caught:
        vm_set_ports(vm=vm, ports=[22, 80], by=olga)
    assert (caught.value.quota, caught.value.limit, caught.value.used) == ("ports", 1, 1)
    op = vm_set_ports(vm=vm, ports=[22, 80], by=olga, ignore_quota=True)
    assert op.params["ignore_quota"] is True and op.requested_by == olga


def test_the_quota_is_overridden_per_user_and_per_group_like_the_others(alice, template, settings, make_env):
    settings.TT_QUOTA_PORTS = 1
    group = alice.groups.create(name="web")
    GroupQuota.objects.create(group=group, ports=3)
    make_env(alice, vms=[vm_spec(template, "web", [22, 80, 443])])  # the group's 3
    line = {q.name: q for q in quotas.report(alice)}["ports"]
    assert (line.limit, line.used, line.source) == (3, 3, "group web")
    UserQuota.objects.create(user=alice, ports=5)
    line = {q.name: q for q in quotas.report(alice)}["ports"]
    assert (line.limit, line.source) == (5, "user")
    body = client_for(alice).get("/api/quota/").json()
    assert body["ports"] == {"limit": 5, "used": 3, "source": "user"}


def test_a_create_that_would_take_a_warm_spare_is_bound_too(alice, node, template, olga, settings, db_state,
                                                           run_tasks):
    with run_tasks():
        pool = warm.pool_save(pool=WarmPool(node=node, template=template, size=1,
                                            vm_sizes=[{"cpu_num": 1, "mem_mb": 128, "disk_mb": 0}]), by=olga)
    (spare,) = pool.spares.live()
    settings.TT_QUOTA_PORTS = 2
    settings.TT_MAX_PORTS_PER_VM = 2
    ask = {"name": "w", "template": template.name, "mem_mb": 128}
    before = db_state()
    outcome = create_env("api", alice, template, name="e1", vms=[NewVm(**ask, ports=[22, 80, 443])])
    assert (outcome.status, outcome.body["field"]) == (400, "vms[0].ports")
    settings.TT_MAX_PORTS_PER_VM = 3
    outcome = create_env("api", alice, template, name="e1", vms=[NewVm(**ask, ports=[22, 80, 443])])
    assert_refused(outcome, "api", quota="ports", limit=2, used=0, requested=3, says=says(2, 0, 3))
    assert db_state() == before
    spare.refresh_from_db()
    assert spare.warm_pool_id == pool.pk  # still the pool's
    with run_tasks():
        assert create_env("api", alice, template, name="e1", vms=[NewVm(**ask, ports=[22, 80])]).accepted
    spare.refresh_from_db()
    assert spare.env.owner == alice and spare.port_mappings.count() == 2


# --- the per-VM cap: a rule of the request -----------------------------------------------------


def test_a_vm_takes_the_per_vm_cap_and_one_more_is_refused_on_the_field(alice, template, settings, db_state,
                                                                        make_env, run_tasks):
    settings.TT_MAX_PORTS_PER_VM = 3
    api = client_for(alice)
    before = db_state()
    response = api.post("/api/envs/", {"name": "e", "vms": [{"name": "a", "template": template.name,
                                                               "ports": [1, 2, 3, 4]}]}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["field"]) == ("invalid", "vms[0].ports")
    assert body["message"] == "at most 3 ports per VM (TT_MAX_PORTS_PER_VM)"
    assert db_state() == before
    env = make_env(alice, vms=[vm_spec(template, "a", [1, 2, 3])])
    vm = env.vms.get()
    response = api.put(f"/api/vms/{vm.pk}/ports/", {"ports": [1, 2, 3, 4]}, format="json")
    assert (response.status_code, response.json()["field"]) == (400, "ports")
    response = api.post(f"/api/envs/{env.pk}/vms/", {"name": "b", "template": template.name,
                                                     "ports": [1, 2, 3, 4]}, format="json")
    assert (response.status_code, response.json()["field"]) == (400, "ports")
    with refused(db_state, InvalidInput) as caught:  # the service itself (what the admin and tasks call)
        vm_set_ports(vm=vm, ports=[1, 2, 3, 4], by=alice)
    assert caught.value.field == "ports"
    with run_tasks():
        assert api.put(f"/api/vms/{vm.pk}/ports/", {"ports": [4, 5, 6]}, format="json").status_code == 202


def test_the_portal_refuses_one_port_past_the_cap_on_the_row(client, alice, template, settings, db_state):
    settings.TT_MAX_PORTS_PER_VM = 2
    client.force_login(alice)
    data = {"name": "e", "lifetime_hours": "1", "idempotency_key": "k1", "vms-TOTAL_FORMS": "1",
            "vms-INITIAL_FORMS": "0", "vms-MIN_NUM_FORMS": "1", "vms-MAX_NUM_FORMS": "100",
            "vms-0-name": "a", "vms-0-template": str(template.pk), "vms-0-cpu_num": "1",
            "vms-0-mem_mb": "256", "vms-0-disk_mb": "", "vms-0-net_kind": "nat"}
    before = db_state()
    response = client.post(reverse("envs:create"), {**data, "vms-0-ports": "1, 2, 3"})
    assert response.status_code == 200
    row = response.context["formset"].forms[0]
    assert row.errors["ports"] == ["at most 2 ports per VM (TT_MAX_PORTS_PER_VM)"]
    assert db_state() == before
    assert client.post(reverse("envs:create"), {**data, "vms-0-ports": "1, 2"}).status_code == 302


def test_the_schema_states_the_cap_as_it_is_set(client, settings):
    settings.TT_MAX_PORTS_PER_VM = 7
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    bodies = schema["components"]["schemas"]
    assert bodies["NewVmRequest"]["properties"]["ports"]["maxItems"] == 7
    assert bodies["PortsChangeRequest"]["properties"]["ports"]["maxItems"] == 7
