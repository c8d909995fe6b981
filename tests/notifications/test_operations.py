"""A failed operation is told to its Env's owner (kind, target, error code and message,
a link to the Env); a notification that cannot be delivered, or a notifications app that
breaks, never holds up the expiry or the operation."""

from __future__ import annotations

from datetime import timedelta

import libvirt
import pytest
from django.core import mail

from engines.libvirt.engine import LibvirtEngine
from envs.services import env_expire_due
from notifications import hooks, services
from notifications.models import Delivery, Notification
from tests.envs.test_operations import failing
from tests.support import T0, done
from vms.services import vm_start, vm_stop

pytestmark = pytest.mark.usefixtures("frozen_clock")


@pytest.fixture
def env(alice, make_env):
    return make_env(alice, lifetime=3600)


@pytest.fixture
def vm(env):
    return env.vms.get()


def failed_start(vm, alice, run_tasks, monkeypatch):
    with run_tasks():
        vm_stop(vm=vm, by=alice)
    failing(monkeypatch, LibvirtEngine, "start_vm", libvirt.libvirtError("domain refused to boot"))
    with run_tasks():
        op = vm_start(vm=vm, by=alice)
    op = done(op)
    assert (op.status, op.error_code) == ("failed", "start_vm")
    return op


def test_it_tells_the_owner_an_operation_failed(alice, env, vm, run_tasks, monkeypatch):
    op = failed_start(vm, alice, run_tasks, monkeypatch)
    (message,) = mail.outbox
    assert message.subject == "TT Portal: Start VM failed on demo/vm0 (start_vm)"
    assert "Operation:  Start VM (vm_start, #" in message.body
    assert "Target:     demo/vm0" in message.body
    assert "Error code: start_vm" in message.body
    assert "domain refused to boot" in message.body
    assert f"http://127.0.0.1:8000/envs/{env.pk}/" in message.body
    notification = Notification.objects.get()
    assert (notification.kind, notification.key, notification.operation) == (
        "operation.failed", f"operation.failed:op={op.pk}", op)
    assert notification.payload["operation"]["error_code"] == "start_vm"
    # Told once, whatever runs its hook again.
    with run_tasks():
        hooks.operation_finished(op.pk, "failed")
        services.notify_operation_finished(op.pk)
    assert len(mail.outbox) == 1


def test_it_says_nothing_of_operations_that_succeed(alice, vm, run_tasks):
    with run_tasks():
        op = vm_stop(vm=vm, by=alice)
    assert done(op).status == "succeeded"
    assert mail.outbox == []
    assert not Notification.objects.exists()


def test_a_failure_webhook_body_names_the_operation(alice, vm, receiver, run_tasks, monkeypatch):
    services.webhook_create(user=alice, endpoint=receiver.url)
    op = failed_start(vm, alice, run_tasks, monkeypatch)
    (request,) = receiver.received
    body = request.json
    assert body["event"] == "operation.failed"
    assert body["operation"]["id"] == op.pk
    assert body["operation"]["kind"] == "vm_start"
    assert body["operation"]["target"] == "demo/vm0"
    assert body["operation"]["error_code"] == "start_vm"
    assert "domain refused to boot" in body["operation"]["error_message"]
    assert body["env"]["url"].endswith(f"/envs/{vm.env_id}/")


# --- never in the way ---------------------------------------------------------------------------


class BrokenMailServer:
    """An email backend whose server is down."""

    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        raise ConnectionRefusedError(111, "Connection refused")


def test_an_undeliverable_notice_does_not_hold_up_the_expiry(env, alice, settings, time_machine, run_tasks):
    settings.EMAIL_BACKEND = f"{__name__}.BrokenMailServer"
    settings.TT_WEBHOOK_ALLOW_PRIVATE = True
    services.webhook_create(user=alice, endpoint="http://127.0.0.1:9/nobody-listens")
    time_machine.move_to(env.end_at)
    with run_tasks():
        (op,) = env_expire_due()
    op.refresh_from_db()
    env.refresh_from_db()
    assert (op.status, env.status) == ("succeeded", "destroyed")
    deliveries = Delivery.objects.filter(notification__kind="env.expired")
    assert sorted(deliveries.values_list("channel", "status", "attempts")) == [
        ("email", "retrying", 1), ("webhook", "retrying", 1)]
    assert "Connection refused" in deliveries.get(channel="email").last_error


def test_an_undeliverable_notice_does_not_hold_up_the_operation(alice, vm, settings, run_tasks, monkeypatch):
    settings.EMAIL_BACKEND = f"{__name__}.BrokenMailServer"
    op = failed_start(vm, alice, run_tasks, monkeypatch)
    assert op.status == "failed"  # as it would be without notifications
    assert Delivery.objects.get().status == "retrying"


def test_a_broken_notifications_app_does_not_hold_up_the_expiry(env, monkeypatch, time_machine, run_tasks):
    def broken(*args, **kwargs):
        raise RuntimeError("the broker is down")

    monkeypatch.setattr(hooks, "enqueue", broken)
    time_machine.move_to(env.end_at)
    with run_tasks():
        (op,) = env_expire_due()
    op.refresh_from_db()
    env.refresh_from_db()
    assert (op.status, env.status) == ("succeeded", "destroyed")
    assert not Notification.objects.exists()


def test_a_notice_whose_task_fails_does_not_hold_up_the_operation(env, monkeypatch, time_machine, run_tasks):
    def broken(operation_id):
        raise RuntimeError("a bug in notifications")

    monkeypatch.setattr(services, "notify_operation_finished", broken)
    time_machine.move_to(env.end_at + timedelta(seconds=1))
    with run_tasks():
        (op,) = env_expire_due()
    op.refresh_from_db()
    assert op.status == "succeeded"
    assert op.finished_at == T0 + timedelta(hours=1, seconds=1)


def test_it_warns_through_every_channel_at_once(env, alice, receiver, time_machine, sweep):
    _, secret = services.webhook_create(user=alice, endpoint=receiver.url, name="chat")
    time_machine.move_to(env.end_at - timedelta(minutes=10))
    sweep()
    assert len(mail.outbox) == 1
    (request,) = receiver.received
    assert request.signed_with(secret)
    body = request.json
    assert body["event"] == "env.expiring"
    assert body["expires_in"] == 600
    assert body["env"]["name"] == "demo" and body["env"]["end_at"] == "2030-01-01T13:00:00Z"
    assert body["extend_url"] in mail.outbox[0].body
    assert sorted(Delivery.objects.values_list("channel", "status")) == [
        ("email", "delivered"), ("webhook", "delivered")]
