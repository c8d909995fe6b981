"""Each verb leaves exactly one event, with the right actor, target and result, whatever
calls the service; a refusal is recorded as refused with its code, after its roll-back."""

from __future__ import annotations

import pytest

from accounts.models import UserQuota
from accounts.services import ssh_key_add, ssh_key_delete, token_create, token_revoke
from audit import context
from audit.models import AuditEvent
from envs import peering, services
from envs.blueprints import blueprint_delete, blueprint_save
from notifications.services import webhook_create, webhook_delete
from tests.api_support import BLUEPRINT_FILE
from tests.conftest import make_staff
from tests.support import public_key_line
from ttportal.errors import Forbidden, IllegalState, QuotaExceeded
from vms import services as vm_services
from vms.new_vms import NewVm


def only_event(**filters) -> AuditEvent:
    events = list(AuditEvent.objects.filter(**filters))
    assert len(events) == 1, [str(e) for e in AuditEvent.objects.all()]
    return events[0]


@pytest.fixture
def env(alice, make_env):
    return make_env(alice, vms=2)


def test_env_create_is_one_event_on_the_new_env_by_its_owner(alice, template):
    op = services.env_create(owner=alice, by=alice, name="demo",
                             vms=[NewVm(name="a", template=template.name)])
    event = only_event(verb="env.create")
    assert (event.user, event.username, event.owner_id, event.result, event.code) == (
        alice, "alice", alice.pk, "ok", "")
    assert (event.object_type, event.object_id, event.object_name, event.env_id) == (
        "env", str(op.env_id), "demo", op.env_id)
    assert event.detail == {"operation": op.pk}
    assert event.interface == "system"  # no request: a shell's call


# (verb, the call on the world: alice's Env `env` of two running VMs; by alice)
VERBS = [
    ("env.extend", lambda w: services.env_extend(env=w.env, by=w.alice, lifetime=7200), "env"),
    ("env.stop", lambda w: services.env_stop(env=w.env, by=w.alice), "env"),
    ("env.deny_outgoing", lambda w: services.env_set_deny_outgoing(env=w.env, deny=True, by=w.alice),
     "env"),
    ("env.idle_suspend", lambda w: services.env_set_idle_suspend(env=w.env, minutes=30, by=w.alice), "env"),
    ("env.destroy", lambda w: services.env_destroy(env=w.env, by=w.alice), "env"),
    ("vm.stop", lambda w: vm_services.vm_stop(vm=w.vm, by=w.alice), "vm"),
    ("vm.suspend", lambda w: vm_services.vm_suspend(vm=w.vm, by=w.alice), "vm"),
    ("vm.destroy", lambda w: vm_services.vm_destroy(vm=w.vm, by=w.alice), "vm"),
    ("vm.blacklist", lambda w: vm_services.vm_set_blacklist(vm=w.vm, addresses=["192.0.2.7"], by=w.alice),
     "vm"),
    ("vm.ports", lambda w: vm_services.vm_set_ports(vm=w.vm, ports=[22], by=w.alice), "vm"),
    ("vm.add", lambda w: vm_services.vm_add(env=w.env, spec=NewVm(name="extra", template="tt/busybox"),
                                            by=w.alice), "vm"),
    ("snapshot.create", lambda w: vm_services.snapshot_create(vm=w.vm, name="s1", by=w.alice), "snapshot"),
    ("token.create", lambda w: token_create(user=w.alice, name="ci"), "apitoken"),
    ("sshkey.add", lambda w: ssh_key_add(user=w.alice, public_key=public_key_line()), "sshkey"),
    ("webhook.create", lambda w: webhook_create(user=w.alice, endpoint="https://ci.example.com/hook"),
     "webhook"),
    ("blueprint.save", lambda w: blueprint_save(by=w.alice, name="bp", text=BLUEPRINT_FILE), "blueprint"),
]


class World:
    def __init__(self, alice, env):
        self.alice, self.env = alice, env
        self.vm = env.vms.order_by("name").first()


@pytest.mark.parametrize(("verb", "call", "object_type"), VERBS, ids=[v[0] for v in VERBS])
def test_each_verb_leaves_exactly_one_event(verb, call, object_type, alice, env):
    AuditEvent.objects.all()._raw_delete(AuditEvent.objects.db)  # the world's own making
    call(World(alice, env))
    event = only_event()
    assert (event.verb, event.user, event.owner_id, event.result, event.object_type) == (
        verb, alice, alice.pk, "ok", object_type)
    if object_type in ("env", "vm", "snapshot"):
        assert event.env_id == env.pk


def test_the_second_half_of_each_pair_is_one_event_too(alice, env):
    token, _ = token_create(user=alice, name="ci")
    key = ssh_key_add(user=alice, public_key=public_key_line())
    hook, _ = webhook_create(user=alice, endpoint="https://ci.example.com/hook")
    blueprint = blueprint_save(by=alice, name="bp", text=BLUEPRINT_FILE)
    token_revoke(token=token, by=alice)
    ssh_key_delete(key=key, by=alice)
    webhook_delete(webhook=hook, by=alice)
    blueprint_delete(blueprint=blueprint, by=alice)
    assert only_event(verb="token.revoke").object_id == str(token.public_id)
    assert only_event(verb="sshkey.delete").object_id == str(key.pk)
    assert only_event(verb="webhook.delete").object_name == hook.name
    assert only_event(verb="blueprint.delete").object_name == "bp"


def test_staff_acting_on_an_env_are_the_actor_for_its_owner(alice, env):
    olga = make_staff("olga2", "envs.change_env")
    services.env_stop(env=env, by=olga)
    event = only_event(verb="env.stop")
    assert (event.user, event.owner_id, event.env_id) == (olga, alice.pk, env.pk)


def test_a_refusal_is_recorded_as_refused_with_its_code_and_nothing_else_changes(alice, bob, env):
    with pytest.raises(Forbidden):
        services.env_stop(env=env, by=bob)
    event = only_event(verb="env.stop")
    assert (event.user, event.owner_id, event.result, event.code) == (bob, alice.pk, "refused", "forbidden")
    assert not env.vms.filter(status="stopped").exists()


def test_a_refused_create_names_its_owner_and_the_quota(alice, template):
    UserQuota.objects.create(user=alice, vms=0)
    with pytest.raises(QuotaExceeded):
        services.env_create(owner=alice, by=alice, name="demo", vms=[NewVm(name="a", template=template.name)])
    event = only_event(verb="env.create")
    assert (event.result, event.code, event.owner_id, event.object_type) == (
        "refused", "quota_exceeded", alice.pk, "")


def test_a_refusal_by_state_is_refused(alice, env):
    services.env_destroy(env=env, by=alice)
    with pytest.raises(IllegalState):
        services.env_destroy(env=env, by=alice)
    assert list(AuditEvent.objects.filter(verb="env.destroy").values_list("result", "code")) == [
        ("refused", "illegal_state"), ("ok", "")]


def test_a_service_inside_another_records_only_the_outer_one(alice, template):
    blueprint = blueprint_save(by=alice, name="bp", text=BLUEPRINT_FILE)
    from envs.blueprints import blueprint_launch

    op = blueprint_launch(blueprint=blueprint, by=alice, name="launched")
    event = only_event(verb="blueprint.launch")
    assert (event.object_type, event.object_id) == ("env", str(op.env_id))
    assert not AuditEvent.objects.filter(verb="env.create").exists()


def test_the_expiry_sweep_is_the_system_named_by_its_schedule(alice, env):
    from django.utils import timezone

    type(env).objects.filter(pk=env.pk).update(end_at=timezone.now())
    with context.system("tt: expiry"):
        services.env_expire_due()
    event = only_event(verb="env.expire")
    assert (event.user, event.username, event.system, event.interface, event.owner_id) == (
        None, "", "tt: expiry", "schedule", alice.pk)
    assert event.actor == "system: tt: expiry"


def test_a_django_q_task_runs_as_the_system_named_by_its_schedule():
    from audit import signals

    signals.task_started("django_q", task={"group": "tt: expiry", "func": "envs.tasks.expire_envs"})
    try:
        assert (context.current().interface, context.current().system) == ("schedule", "tt: expiry")
    finally:
        signals.task_ended("django_q")
    assert context.current().system == ""


def test_peering_is_one_event_per_side_asked(alice, bob, make_env):
    mine = make_env(alice, name="mine")
    theirs = make_env(bob, name="theirs")
    peering.env_peer(env=mine, other=theirs, by=alice)
    peering.env_unpeer(env=mine, other=theirs, by=alice)
    asked = only_event(verb="peering.create")
    assert (asked.env_id, asked.detail["other_env"], asked.detail.get("asked")) == (mine.pk, theirs.pk, True)
    assert only_event(verb="peering.end").result == "ok"


def test_an_operation_that_fails_in_its_task_is_a_failed_event_of_the_system(alice, env, run_tasks,
                                                                              monkeypatch):
    from engines.base import VmEngine
    from engines.errors import EngineError, ErrorCode

    def broken(*args, **kwargs):
        raise EngineError("the disk is gone", code=ErrorCode.SNAPSHOT_CREATE)

    vm = env.vms.order_by("name").first()
    monkeypatch.setattr(VmEngine, "create_snapshot", broken)
    with run_tasks():
        op = vm_services.snapshot_create(vm=vm, name="s1", by=alice)
    op.refresh_from_db()
    assert op.status == "failed", op.status
    failed = only_event(verb="snapshot.create", result="failed")
    assert (failed.user, failed.code, failed.owner_id, failed.detail["requested_by"]) == (
        None, op.error_code, alice.pk, "alice")
    assert only_event(verb="snapshot.create", result="ok").user == alice
