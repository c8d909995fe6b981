"""Quotas on VMs and snapshots: vm_add (live VMs, vCPUs, memory, disk) and snapshot_create
(snapshots), through the service, the portal and the API; staff bound by the owner's
quota unless they say otherwise (recorded)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.api_support import client_for
from tests.quota_support import add_vm, assert_refused, new_vms
from tests.support import refused, take_snapshot
from ttportal.errors import QuotaExceeded
from vms.new_vms import NewVm
from vms.services import snapshot_create, vm_add, vm_destroy

INTERFACES = ["service", "portal", "api"]  # the admin adds no VM and takes no snapshot

# quota, setting, limit; two VMs like this fill it exactly (one made with the Env, one added),
# then the VM whose adding is refused, and what it adds.
CASES = [
    ("vms", "TT_QUOTA_VMS", 2, {}, {}, 1, "at most 2 of live VMs; 2 in use, and this request adds 1"),
    ("vcpus", "TT_QUOTA_VCPUS", 4, {"cpu_num": 2}, {"cpu_num": 2}, 2,
     "at most 4 of vCPUs; 4 in use, and this request adds 2"),
    ("mem_mb", "TT_QUOTA_MEM_MB", 1024, {"mem_mb": 512}, {"mem_mb": 128}, 128,
     "at most 1024 MiB of memory; 1024 MiB in use, and this request adds 128 MiB"),
    ("disk_mb", "TT_QUOTA_DISK_MB", 60, {"disk_mb": 30}, {"disk_mb": 25}, 25,
     "at most 60 MiB of disk; 60 MiB in use, and this request adds 25 MiB"),
]


@pytest.mark.parametrize("interface", INTERFACES)
@pytest.mark.parametrize(("quota", "setting", "limit", "fill", "more", "adds", "says"), CASES,
                         ids=[case[0] for case in CASES])
def test_it_adds_vms_up_to_each_quota_then_refuses(interface, quota, setting, limit, fill, more, adds, says,
                                                   alice, make_env, template, settings, db_state):
    setattr(settings, setting, limit)
    env = make_env(alice, vms=new_vms(template, 1, **fill))
    assert add_vm(interface, env, template, NewVm(name="last", template=template.name, **fill)).accepted
    before = db_state()
    outcome = add_vm(interface, env, template, NewVm(name="more", template=template.name, **more))
    assert_refused(outcome, interface, quota=quota, limit=limit, used=limit, requested=adds,
                   says=f"alice may have {says}")
    assert db_state() == before


def test_a_destroyed_vm_frees_its_share(alice, make_env, template, settings, run_tasks):
    settings.TT_QUOTA_VMS = 2
    env = make_env(alice, vms=2)
    with pytest.raises(QuotaExceeded):
        vm_add(env=env, spec=NewVm(name="third", template=template.name), by=alice)
    with run_tasks():
        vm_destroy(vm=env.vms.get(name="vm0"), by=alice)
    vm_add(env=env, spec=NewVm(name="third", template=template.name), by=alice)


def test_staff_adding_a_vm_are_bound_unless_they_say_otherwise(alice, olga, make_env, template, settings,
                                                                db_state):
    settings.TT_QUOTA_VMS = 1
    env = make_env(alice)
    with refused(db_state, QuotaExceeded) as caught:
        vm_add(env=env, spec=NewVm(name="more", template=template.name), by=olga)
    assert caught.value.quota == "vms"
    op = vm_add(env=env, spec=NewVm(name="more", template=template.name), by=olga, ignore_quota=True)
    assert op.params["ignore_quota"] is True and op.requested_by == olga


# --- snapshots ------------------------------------------------------------------------------


def _snapshot(interface: str, vm, name: str, client):
    if interface == "service":
        try:
            snapshot_create(vm=vm, name=name, by=vm.env.owner)
        except QuotaExceeded as exc:
            return False, exc.message, None
        return True, "", None
    if interface == "api":
        response = client_for(vm.env.owner).post(f"/api/vms/{vm.pk}/snapshots/", {"name": name})
        return response.status_code == 202, response.json().get("message", ""), response
    client.force_login(vm.env.owner)
    response = client.post(reverse("vms:snapshot_create", args=[vm.pk]), {"name": name}, follow=True)
    messages = [str(m) for m in response.context["messages"]]
    refusal = next((m for m in messages if m.startswith("quota exceeded")), "")
    return not refusal, refusal, response


@pytest.mark.parametrize("interface", INTERFACES)
def test_it_takes_snapshots_up_to_the_quota_then_refuses(interface, client, alice, make_env, settings,
                                                        run_tasks, db_state):
    settings.TT_QUOTA_SNAPSHOTS = 2
    env = make_env(alice, vms=2)
    vm0, vm1 = env.vms.order_by("name")
    take_snapshot(vm0, run_tasks, "s1")
    with run_tasks():
        ok, _, _ = _snapshot(interface, vm1, "s2", client)  # in another VM: counted per owner
    assert ok
    before = db_state()
    ok, message, response = _snapshot(interface, vm0, "s3", client)
    assert not ok
    assert message == ("quota exceeded: alice may have at most 2 of snapshots; 2 in use, "
                       "and this request adds 1")
    if interface == "api":
        assert response.status_code == 403
        assert response.json() == {"code": "quota_exceeded", "message": message, "quota": "snapshots",
                                   "limit": 2, "used": 2, "requested": 1}
    assert db_state() == before  # no snapshot, no operation


def test_staff_taking_a_snapshot_are_bound_unless_they_say_otherwise(alice, olga, make_env, settings,
                                                                     db_state):
    settings.TT_QUOTA_SNAPSHOTS = 0
    vm = make_env(alice).vms.get()
    with refused(db_state, QuotaExceeded):
        snapshot_create(vm=vm, name="s1", by=olga)
    op = snapshot_create(vm=vm, name="s1", by=olga, ignore_quota=True)
    assert op.params["ignore_quota"] is True
