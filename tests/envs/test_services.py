"""Env services: every verb, its happy path and its refusals, with time frozen."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from envs.models import Env
from envs.services import (
    env_create,
    env_destroy,
    env_extend,
    env_set_deny_outgoing,
    env_start,
    env_stop,
)
from operations.models import Operation
from tests.support import T0, domain_names, done, held_by_a_live_worker, refused
from ttportal.errors import CooldownActive, Forbidden, IllegalState, InvalidInput, NoCapacity
from vms.models import PortMapping, Snapshot, Vm
from vms.new_vms import NewVm
from vms.services import snapshot_create

pytestmark = pytest.mark.usefixtures("frozen_clock")


# --- env_create ---------------------------------------------------------------


def test_it_creates_an_env_with_running_vms(alice, node, template, run_tasks, firewall, settings):
    with run_tasks():
        op = env_create(owner=alice, by=alice, name="demo", vms=[
            NewVm(name="web", template="tt/busybox", ports=[80, "53/udp"]),
            NewVm(name="db", template=template.pk, cpu_num=2, mem_mb=512, disk_mb=100),
        ])
    op = done(op)
    assert op.status == "succeeded", op.error_message
    assert (op.kind, op.requested_by, op.progress) == ("env_create", alice, 100)
    env = op.env
    assert (env.owner, env.name, env.status) == (alice, "demo", "active")
    assert env.start_at == T0
    assert env.end_at == T0 + timedelta(seconds=settings.TT_DEFAULT_ENV_LIFETIME)
    assert env.last_mgmt_at == T0
    web, db = Vm.objects.get(env=env, name="web"), Vm.objects.get(env=env, name="db")
    assert web.status == db.status == "running"
    assert (db.cpu_num, db.mem_mb, db.disk_mb) == (2, 512, 100)
    assert web.disk_mb == template.size_mb
    # The IP is the node's network plus the MAC's low bytes.
    assert web.ip == node.ip_for_mac(web.mac) and web.ip.startswith("10.100.")
    assert web.mac != db.mac and web.ip != db.ip
    assert web.addr == node.public_host
    ports = {(p.protocol, p.inner_port): p.public_port for p in web.port_mappings.all()}
    assert set(ports) == {("tcp", 80), ("udp", 53)}
    assert all(node.port_min <= p <= node.port_max for p in ports.values())
    assert firewall.port_map == {(proto, public): (web.ip, inner) for (proto, inner), public in ports.items()}
    assert firewall.denied == set()
    assert domain_names() == {web.engine_name, db.engine_name}


def test_it_creates_a_flat_vm_reached_at_its_own_address(alice, template, run_tasks):
    with run_tasks():
        op = env_create(owner=alice, by=alice, name="demo",
                        vms=[NewVm(name="flat", template=template, net_kind="flat")])
    assert done(op).status == "succeeded", op.error_message
    vm = Vm.objects.get(name="flat")
    assert vm.addr == vm.ip
    assert not vm.port_mappings.exists()


def test_it_creates_an_env_that_denies_outgoing(alice, make_env, firewall):
    env = make_env(alice, vms=2, deny_outgoing=True)
    assert env.deny_outgoing
    assert firewall.denied == set(env.vms.values_list("ip", flat=True))


def test_it_takes_a_lifetime_or_an_end(alice, template, settings):
    vms = [NewVm(name="vm", template=template)]
    op = env_create(owner=alice, by=alice, name="short", vms=vms, lifetime=600)
    assert op.env.end_at == T0 + timedelta(seconds=600)
    end = T0 + timedelta(seconds=settings.TT_MAX_ENV_LIFETIME)  # exactly the maximum is fine
    op = env_create(owner=alice, by=alice, name="long", vms=vms, end_at=end)
    assert op.env.end_at == end


def test_it_lets_staff_create_an_env_for_someone(alice, olga, template, run_tasks):
    with run_tasks():
        op = env_create(owner=alice, by=olga, name="demo", vms=[NewVm(name="vm", template=template)])
    op = done(op)
    assert op.status == "succeeded"
    assert op.env.owner == alice
    assert op.requested_by == olga


def test_it_refuses_to_create_an_env_for_someone_else(alice, bob, template, db_state):
    with refused(db_state, Forbidden):
        env_create(owner=alice, by=bob, name="demo", vms=[NewVm(name="vm", template=template)])


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("name", {"name": "Not_A_Label"}),
        ("name", {"name": "-x"}),
        ("name", {"name": "a" * 64}),
        ("vms", {"vms": []}),
        ("vms[0].name", {"vms": [NewVm(name="UPPER", template="tt/busybox")]}),
        ("vms[0].template", {"vms": [NewVm(name="vm", template="tt/unknown")]}),
        ("vms[0].disk_mb", {"vms": [NewVm(name="vm", template="tt/busybox", disk_mb=19)]}),
        ("vms[0].cpu_num", {"vms": [NewVm(name="vm", template="tt/busybox", cpu_num=0)]}),
        ("vms[0].mem_mb", {"vms": [NewVm(name="vm", template="tt/busybox", mem_mb=32)]}),
        ("vms[0].net_kind", {"vms": [NewVm(name="vm", template="tt/busybox", net_kind="bridge")]}),
        ("vms[0].ports[0]", {"vms": [NewVm(name="vm", template="tt/busybox", ports=[70000])]}),
        ("vms[0].ports[0]", {"vms": [NewVm(name="vm", template="tt/busybox", ports=["80/sctp"])]}),
        ("vms[0].ports", {"vms": [NewVm(name="vm", template="tt/busybox", net_kind="flat", ports=[22])]}),
        # The first VM is fine: the second one's fault must not leave the first behind.
        ("vms[1].disk_mb", {"vms": [NewVm(name="a", template="tt/busybox", ports=[22]),
                                    NewVm(name="b", template="tt/busybox", disk_mb=1)]}),
        ("vms[1].name", {"vms": [NewVm(name="a", template="tt/busybox"),
                                 NewVm(name="a", template="tt/busybox")]}),
        ("lifetime", {"lifetime": 0}),
        ("lifetime", {"lifetime": "soon"}),
        ("lifetime", {"lifetime": 7 * 24 * 3600 + 1}),
        ("end_at", {"end_at": T0 - timedelta(seconds=1)}),
        ("end_at", {"end_at": T0}),
        ("end_at", {"end_at": T0 + timedelta(days=7, seconds=1)}),
        ("end_at", {"end_at": datetime(2030, 1, 2, 12, 0, 0)}),  # naive
    ],
)
def test_it_refuses_bad_input_to_create(alice, template, db_state, firewall, field, kwargs):
    request = {"owner": alice, "by": alice, "name": "demo",
               "vms": [NewVm(name="vm", template="tt/busybox")], **kwargs}
    with refused(db_state, InvalidInput) as caught:
        env_create(**request)
    assert caught.value.field == field
    assert caught.value.code == "invalid"
    assert firewall.port_map == {}


def test_it_refuses_a_second_live_env_with_the_same_name(alice, bob, make_env, run_tasks, db_state):
    env = make_env(alice, name="demo")
    with refused(db_state, InvalidInput) as caught:
        env_create(owner=alice, by=alice, name="demo", vms=[NewVm(name="vm", template="tt/busybox")])
    assert caught.value.field == "name"
    # Another owner may use the name, and so may alice once the first one is gone.
    assert env_create(owner=bob, by=bob, name="demo", vms=[NewVm(name="vm", template="tt/busybox")])
    with run_tasks():
        env_destroy(env=env, by=alice)
    with run_tasks():
        op = env_create(owner=alice, by=alice, name="demo", vms=[NewVm(name="vm", template="tt/busybox")])
    assert done(op).status == "succeeded"


def test_it_refuses_more_vms_than_an_env_holds(alice, template, settings, db_state):
    settings.TT_MAX_VMS_PER_ENV = 2
    with refused(db_state, InvalidInput) as caught:
        env_create(owner=alice, by=alice, name="demo",
                   vms=[NewVm(name=f"vm{i}", template=template) for i in range(3)])
    assert caught.value.field == "vms"


# --- env_extend -----------------------------------------------------------------


def test_it_extends_an_env(alice, make_env, time_machine):
    env = make_env(alice, lifetime=3600)
    old_end = env.end_at
    new_end = T0 + timedelta(hours=5)
    op = env_extend(env=env, by=alice, end_at=new_end)
    # A short operation: recorded as done at once, nothing enqueued.
    assert (op.kind, op.status, op.requested_by, op.progress) == ("env_extend", "succeeded", alice, 100)
    assert op.params == {"from": old_end.isoformat(), "to": new_end.isoformat()}
    env.refresh_from_db()
    assert env.end_at == new_end
    assert env.start_at == T0  # never moves
    # `lifetime` counts from now.
    time_machine.shift(600)
    env_extend(env=env, by=alice, lifetime=3600)
    env.refresh_from_db()
    assert env.end_at == T0 + timedelta(seconds=600 + 3600)


def test_it_may_shorten_an_env(alice, make_env):
    env = make_env(alice, lifetime=3600)
    env_extend(env=env, by=alice, lifetime=60)
    env.refresh_from_db()
    assert env.end_at == T0 + timedelta(seconds=60)


def test_it_lets_staff_extend_any_env(alice, olga, make_env):
    env = make_env(alice)
    op = env_extend(env=env, by=olga, lifetime=7200)
    assert op.requested_by == olga
    env.refresh_from_db()
    assert env.end_at == T0 + timedelta(seconds=7200)


def test_it_measures_the_maximum_from_the_start_not_from_now(alice, make_env, time_machine, settings):
    settings.TT_QUOTA_MAX_EXTENSION = settings.TT_MAX_ENV_LIFETIME  # the global bound, not a quota
    env = make_env(alice)
    time_machine.shift(3600)
    with pytest.raises(InvalidInput) as caught:
        env_extend(env=env, by=alice, lifetime=settings.TT_MAX_ENV_LIFETIME)
    assert caught.value.field == "lifetime"
    env_extend(env=env, by=alice, lifetime=settings.TT_MAX_ENV_LIFETIME - 3600)
    env.refresh_from_db()
    assert env.end_at == T0 + timedelta(seconds=settings.TT_MAX_ENV_LIFETIME)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("end_at", {}),
        ("end_at", {"end_at": T0 - timedelta(seconds=1)}),
        ("end_at", {"end_at": T0}),
        ("end_at", {"end_at": T0 + timedelta(days=7, seconds=1)}),
        ("end_at", {"end_at": "tomorrow"}),
        ("lifetime", {"lifetime": -5}),
        ("lifetime", {"lifetime": 7 * 24 * 3600 + 1}),
    ],
)
def test_it_refuses_bad_input_to_extend(alice, make_env, db_state, field, kwargs):
    env = make_env(alice)
    with refused(db_state, InvalidInput) as caught:
        env_extend(env=env, by=alice, **kwargs)
    assert caught.value.field == field


def test_it_extends_even_during_the_cooldown(alice, make_env, settings):
    # Extending is not a long operation: it touches no VM.
    settings.TT_MGMT_COOLDOWN = 60
    env = make_env(alice)
    assert env_extend(env=env, by=alice, lifetime=7200).status == "succeeded"


# --- env_stop / env_start -----------------------------------------------------------


def test_it_stops_and_starts_an_env(alice, make_env, run_tasks):
    env = make_env(alice, vms=2)
    with run_tasks():
        op = env_stop(env=env, by=alice)
    op = done(op)
    assert (op.kind, op.status, op.requested_by) == ("env_stop", "succeeded", alice)
    env.refresh_from_db()
    assert env.is_stopped
    assert set(env.vms.values_list("status", flat=True)) == {"stopped"}
    with run_tasks():
        op = env_start(env=env, by=alice)
    op = done(op)
    assert (op.kind, op.status) == ("env_start", "succeeded")
    env.refresh_from_db()
    assert not env.is_stopped
    assert set(env.vms.values_list("status", flat=True)) == {"running"}


def test_it_starts_only_the_vms_that_are_stopped(alice, make_env, run_tasks):
    env = make_env(alice, vms=2)
    vm0 = env.vms.get(name="vm0")
    Vm.objects.filter(pk=vm0.pk).update(status="error")  # say, a failed stop
    with run_tasks():
        op = env_stop(env=env, by=alice)
    op = done(op)
    assert op.status == "succeeded"
    assert set(env.vms.values_list("status", flat=True)) == {"stopped"}


def test_it_lets_staff_stop_any_env(alice, olga, make_env, run_tasks):
    env = make_env(alice)
    with run_tasks():
        op = env_stop(env=env, by=olga)
    assert done(op).requested_by == olga
    assert env.vms.get().status == "stopped"


@pytest.mark.parametrize("verb", [env_stop, env_start, env_destroy])
def test_it_refuses_an_outsider(alice, bob, make_env, db_state, firewall, verb):
    env = make_env(alice)
    fw_before = (dict(firewall.port_map), set(firewall.denied))
    with refused(db_state, Forbidden) as caught:
        verb(env=env, by=bob)
    assert caught.value.code == "forbidden"
    assert (firewall.port_map, firewall.denied) == fw_before


@pytest.mark.parametrize(
    "call",
    [
        lambda env, by: env_extend(env=env, by=by, lifetime=7200),
        lambda env, by: env_set_deny_outgoing(env=env, by=by, deny=True),
    ],
    ids=["env_extend", "env_set_deny_outgoing"],
)
def test_it_refuses_an_outsider_short_verbs(alice, bob, make_env, db_state, firewall, call):
    env = make_env(alice)
    with refused(db_state, Forbidden):
        call(env, bob)
    assert firewall.denied == set()


@pytest.mark.parametrize(
    ("first", "second"),
    [(env_stop, env_start), (env_start, env_stop), (env_stop, env_destroy)],
    ids=["stop-start", "start-stop", "stop-destroy"],
)
def test_it_holds_long_operations_to_the_cooldown(
    alice, make_env, run_tasks, settings, time_machine, db_state, first, second
):
    env = make_env(alice)
    if first is env_start:
        with run_tasks():
            env_stop(env=env, by=alice)
    settings.TT_MGMT_COOLDOWN = 60
    time_machine.shift(60)
    with run_tasks():
        op = first(env=env, by=alice)
    assert done(op).status == "succeeded"
    before = db_state()
    with pytest.raises(CooldownActive) as caught:
        second(env=env, by=alice)
    assert caught.value.retry_after == 60
    assert caught.value.code == "cooldown"
    time_machine.shift(45)
    with pytest.raises(CooldownActive) as caught:
        second(env=env, by=alice)
    assert caught.value.retry_after == 15
    time_machine.shift(14.5)
    with pytest.raises(CooldownActive) as caught:
        second(env=env, by=alice)
    assert caught.value.retry_after == 1
    assert db_state() == before
    time_machine.shift(0.5)
    with run_tasks():
        op = second(env=env, by=alice)
    assert done(op).status == "succeeded"
    env.refresh_from_db()
    assert env.last_mgmt_at == T0 + timedelta(seconds=120)


def test_it_holds_staff_to_the_cooldown_too(alice, olga, make_env, settings):
    settings.TT_MGMT_COOLDOWN = 60
    env = make_env(alice)  # creating counts as the last management operation
    with pytest.raises(CooldownActive) as caught:
        env_stop(env=env, by=olga)
    assert caught.value.retry_after == 60


@pytest.mark.parametrize("verb", [env_stop, env_start, env_destroy])
def test_it_refuses_to_act_on_a_destroyed_env(alice, make_env, run_tasks, db_state, verb):
    env = make_env(alice)
    with run_tasks():
        env_destroy(env=env, by=alice)
    before = db_state()
    with pytest.raises(IllegalState) as caught:
        verb(env=env, by=alice)
    assert caught.value.code == "illegal_state"
    with pytest.raises(IllegalState):
        env_extend(env=env, by=alice, lifetime=600)
    with pytest.raises(IllegalState):
        env_set_deny_outgoing(env=env, by=alice, deny=True)
    assert db_state() == before


# --- env_set_deny_outgoing ---------------------------------------------------------


def test_it_denies_and_allows_outgoing(alice, make_env, run_tasks, firewall):
    env = make_env(alice, vms=2)
    ips = set(env.vms.values_list("ip", flat=True))
    with run_tasks():
        op = env_set_deny_outgoing(env=env, by=alice, deny=True)
    op = done(op)
    assert (op.kind, op.status, op.requested_by) == ("env_set_deny_outgoing", "succeeded", alice)
    env.refresh_from_db()
    assert env.deny_outgoing
    assert firewall.denied == ips
    ports_before = dict(firewall.port_map)
    with run_tasks():
        op = env_set_deny_outgoing(env=env, by=alice, deny=False)
    assert done(op).status == "succeeded"
    env.refresh_from_db()
    assert not env.deny_outgoing
    assert firewall.denied == set()
    assert firewall.port_map == ports_before  # egress changes leave the port map alone


def test_it_keeps_egress_denied_for_a_vm_added_later(alice, make_env, run_tasks, firewall):
    from vms.services import vm_add

    env = make_env(alice)
    with run_tasks():
        env_set_deny_outgoing(env=env, by=alice, deny=True)
    with run_tasks():
        op = vm_add(env=env, by=alice, spec=NewVm(name="late", template="tt/busybox"))
    assert done(op).status == "succeeded", op.error_message
    assert firewall.denied == set(env.vms.values_list("ip", flat=True))
    assert len(firewall.denied) == 2


@pytest.mark.parametrize("deny", ["yes", 1, None])
def test_it_refuses_a_deny_that_is_not_a_boolean(alice, make_env, db_state, deny):
    env = make_env(alice)
    with refused(db_state, InvalidInput) as caught:
        env_set_deny_outgoing(env=env, by=alice, deny=deny)
    assert caught.value.field == "deny_outgoing"


# --- env_destroy --------------------------------------------------------------------


def test_it_destroys_an_env_and_keeps_its_record(alice, make_env, run_tasks, firewall, time_machine):
    env = make_env(alice, vms=2)
    vm0 = env.vms.get(name="vm0")
    with run_tasks():
        snapshot_create(vm=vm0, by=alice, name="before")
    assert Snapshot.objects.count() == 1
    time_machine.shift(30)
    with run_tasks():
        op = env_destroy(env=env, by=alice)
    op = done(op)
    assert (op.kind, op.status, op.requested_by) == ("env_destroy", "succeeded", alice)
    env.refresh_from_db()
    assert env.status == "destroyed"
    assert env.destroyed_at == T0 + timedelta(seconds=30)
    # The VM rows stay, released: no address, no port, no snapshot, nothing on the node.
    vms = list(env.vms.all())
    assert len(vms) == 2
    assert {vm.status for vm in vms} == {"destroyed"}
    assert all(vm.mac is None and vm.ip is None and vm.destroyed_at for vm in vms)
    assert not PortMapping.objects.exists()
    assert not Snapshot.objects.exists()
    assert firewall.port_map == {} and firewall.denied == set() and firewall.blacklist == set()
    assert domain_names() == set()
    # Its history stays on record.
    assert list(env.operations.order_by("id").values_list("kind", flat=True)) == [
        "env_create", "snapshot_create", "env_destroy",
    ]


def test_it_lets_staff_destroy_any_env(alice, olga, make_env, run_tasks):
    env = make_env(alice)
    with run_tasks():
        op = env_destroy(env=env, by=olga)
    op = done(op)
    assert (op.status, op.requested_by) == ("succeeded", olga)
    assert Env.objects.get(pk=env.pk).status == "destroyed"


def test_it_gives_ports_back_for_reuse(alice, make_env, run_tasks, node, db_state):
    # A node with exactly one public port: the second Env only fits once the first is gone.
    node.port_min = node.port_max = 20000
    node.save()
    first = make_env(alice, name="first", vms=[NewVm(name="vm", template="tt/busybox", ports=[22])])
    assert PortMapping.objects.get().public_port == 20000
    with refused(db_state, NoCapacity) as caught:
        env_create(owner=alice, by=alice, name="second",
                   vms=[NewVm(name="vm", template="tt/busybox", ports=[22])])
    assert caught.value.code == "no_capacity"
    with run_tasks():
        env_destroy(env=first, by=alice)
    second = make_env(alice, name="second", vms=[NewVm(name="vm", template="tt/busybox", ports=[22])])
    assert second.vms.get().port_mappings.get().public_port == 20000


def test_it_refuses_to_destroy_an_env_while_a_vm_is_busy(alice, make_env, db_state):
    env = make_env(alice, vms=2)
    op = snapshot_create(vm=env.vms.get(name="vm1"), by=alice, name="s1")
    held_by_a_live_worker(op, timezone.now())
    with refused(db_state, IllegalState) as caught:
        env_destroy(env=env, by=alice)
    assert "vm1" in caught.value.message


def test_it_refuses_env_stop_while_every_vm_is_busy(alice, make_env, settings):
    settings.TT_MGMT_COOLDOWN = 60
    env = make_env(alice, vms=1)
    Env.objects.filter(pk=env.pk).update(last_mgmt_at=None)  # the cooldown is not the reason
    Vm.objects.filter(env=env).update(status=Vm.Status.STARTING)
    with pytest.raises(IllegalState, match="busy"):
        env_stop(env=env, by=alice)
    assert not Operation.objects.filter(kind="env_stop").exists()


def test_it_answers_the_cooldown_before_busy_vms(alice, make_env, settings):
    # Both would refuse it: the cooldown is told, with when to retry.
    settings.TT_MGMT_COOLDOWN = 60
    env = make_env(alice, vms=1)
    Vm.objects.filter(env=env).update(status=Vm.Status.STARTING)
    with pytest.raises(CooldownActive):
        env_stop(env=env, by=alice)
    assert not Operation.objects.filter(kind="env_stop").exists()


def test_it_records_nothing_for_a_no_op_env_start(alice, make_env, settings):
    settings.TT_MGMT_COOLDOWN = 60
    env = make_env(alice, vms=1)  # already running
    Env.objects.filter(pk=env.pk).update(last_mgmt_at=None)
    before = Operation.objects.count()
    assert env_start(env=env, by=alice) is None
    env.refresh_from_db()
    assert env.last_mgmt_at is None  # no cooldown charged
    assert Operation.objects.count() == before
