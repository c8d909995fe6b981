"""The Env and Operation admin: operators act through the services, as themselves."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from envs import services
from envs.kinds import EnvKind
from envs.models import Env
from envs.services import env_destroy
from operations.models import Operation
from operations.services import operation_fail, operation_retry
from tests.admin_support import (
    count_queries,
    grant,
    make_env,
    make_operator,
    messages_of,
    offered_actions,
    post_action,
)
from tests.support import RETRY, lose_a_race
from ttportal.errors import Forbidden
from vms.models import Vm
from vms.services import vm_start, vm_stop

ENVS = reverse("admin:envs_env_changelist")
OPS = reverse("admin:operations_operation_changelist")


@pytest.fixture
def root(client, db):
    return make_operator(client)


def test_it_shows_the_env_list_and_page(client, root, alice, template, run_tasks):
    env = make_env(alice, run=run_tasks)
    response = client.get(ENVS)
    assert response.status_code == 200
    assert b"demo" in response.content
    row = response.context["cl"].result_list[0]
    assert row.live_vms == 1
    response = client.get(reverse("admin:envs_env_change", args=[env.pk]))
    assert response.status_code == 200
    assert b"vm0" in response.content  # the VMs inline


def test_it_shows_the_operation_log(client, root, alice, template, run_tasks):
    env = make_env(alice, run=run_tasks)
    op = env.operations.get()
    response = client.get(OPS)
    assert response.status_code == 200
    assert b"env_create" in response.content
    response = client.get(reverse("admin:operations_operation_change", args=[op.pk]))
    assert response.status_code == 200


def test_it_stops_an_env_as_the_operator(client, root, alice, template, run_tasks):
    env = make_env(alice, run=run_tasks)
    with run_tasks():
        response = post_action(client, ENVS, "stop", [env])
    assert ("success", "Stop queued: 1 env.") in messages_of(response)
    op = Operation.objects.get(kind=EnvKind.ENV_STOP)
    assert op.requested_by == root
    assert op.status == Operation.Status.SUCCEEDED, op.error_message
    assert op.env == env
    env.refresh_from_db()
    assert env.is_stopped
    assert env.vms.get().status == Vm.Status.STOPPED


def test_it_starts_an_env_again(client, root, alice, template, run_tasks):
    env = make_env(alice, run=run_tasks)
    with run_tasks():
        post_action(client, ENVS, "stop", [env])
    with run_tasks():
        post_action(client, ENVS, "start", [env])
    op = Operation.objects.get(kind=EnvKind.ENV_START)
    assert (op.requested_by, op.status) == (root, Operation.Status.SUCCEEDED)
    env.refresh_from_db()
    assert not env.is_stopped
    assert env.vms.get().status == Vm.Status.RUNNING


def test_it_asks_to_retry_an_action_that_lost_a_race(client, root, alice, template, run_tasks, monkeypatch,
                                                     db_state):
    env = make_env(alice, run=run_tasks)
    monkeypatch.setattr(services, "env_stop", lose_a_race)
    before = db_state()
    response = post_action(client, ENVS, "stop", [env])
    assert messages_of(response) == [("error", f"{env}: {RETRY}")]
    assert db_state() == before


def test_it_reports_a_refusal_and_changes_nothing(client, root, alice, template, run_tasks, settings):
    env = make_env(alice, run=run_tasks)
    settings.TT_MGMT_COOLDOWN = 3600  # env_create just used the Env's management slot
    with run_tasks():
        response = post_action(client, ENVS, "stop", [env])
    levels = messages_of(response)
    assert [level for level, _ in levels] == ["error"]
    assert "demo" in levels[0][1] and "retry in" in levels[0][1]
    assert not Operation.objects.filter(kind=EnvKind.ENV_STOP).exists()
    env.refresh_from_db()
    assert not env.is_stopped
    assert env.vms.get().status == Vm.Status.RUNNING


def test_it_extends_by_a_day(client, root, alice, template):
    env = make_env(alice)
    before = env.end_at
    response = post_action(client, ENVS, "extend_by_a_day", [env])
    assert ("success", "Extended by a day: 1 env.") in messages_of(response)
    env.refresh_from_db()
    assert env.end_at == before + timedelta(days=1)
    op = Operation.objects.get(kind=EnvKind.ENV_EXTEND)
    assert (op.requested_by, op.status) == (root, Operation.Status.SUCCEEDED)


def test_it_counts_successes_and_reports_each_failure(client, root, alice, bob, template, run_tasks):
    live = make_env(alice, name="live")
    gone = make_env(bob, name="gone", run=run_tasks)
    with run_tasks():
        env_destroy(env=gone, by=bob)
    response = post_action(client, ENVS, "extend_by_a_day", [live, gone])
    msgs = messages_of(response)
    assert ("success", "Extended by a day: 1 env.") in msgs
    assert ("error", "gone (bob): Env gone is destroyed") in msgs
    assert Operation.objects.filter(kind=EnvKind.ENV_EXTEND).count() == 1


def test_it_denies_and_allows_outgoing_traffic(client, root, alice, template, run_tasks):
    env = make_env(alice, run=run_tasks)
    with run_tasks():
        post_action(client, ENVS, "deny_outgoing", [env])
    env.refresh_from_db()
    assert env.deny_outgoing
    with run_tasks():
        post_action(client, ENVS, "allow_outgoing", [env])
    env.refresh_from_db()
    assert not env.deny_outgoing
    ops = Operation.objects.filter(kind=EnvKind.ENV_DENY_OUTGOING)
    assert [(o.requested_by, o.status) for o in ops] == [(root, "succeeded")] * 2


def test_it_destroys_an_env(client, root, alice, template, run_tasks):
    env = make_env(alice, run=run_tasks)
    with run_tasks():
        post_action(client, ENVS, "destroy", [env])
    env.refresh_from_db()
    assert env.status == Env.Status.DESTROYED
    assert env.vms.get().status == Vm.Status.DESTROYED
    op = Operation.objects.get(kind=EnvKind.ENV_DESTROY)
    assert (op.requested_by, op.status) == (root, Operation.Status.SUCCEEDED)


def test_it_does_not_edit_or_delete_envs_directly(client, root, alice, template):
    # Adding goes through env_create: see test_admin_create.py.
    env = make_env(alice)
    change = reverse("admin:envs_env_change", args=[env.pk])
    response = client.post(change, {"status": "destroyed", "is_stopped": "on", "name": "x"})
    assert response.status_code == 403
    assert client.get(reverse("admin:envs_env_delete", args=[env.pk])).status_code == 403
    actions = [name for name, _ in client.get(ENVS).context["action_form"].fields["action"].choices]
    assert "delete_selected" not in actions
    assert {"start", "stop", "extend_by_a_day", "deny_outgoing", "allow_outgoing", "destroy"} <= set(actions)
    env.refresh_from_db()
    assert (env.status, env.is_stopped, env.name) == (Env.Status.ACTIVE, False, "demo")


def test_it_keeps_the_operation_log_read_only(client, root, alice, template):
    op = make_env(alice).operations.get()
    assert client.get(reverse("admin:operations_operation_add")).status_code == 403
    change = reverse("admin:operations_operation_change", args=[op.pk])
    assert client.post(change, {"status": "failed"}).status_code == 403
    assert client.get(reverse("admin:operations_operation_delete", args=[op.pk])).status_code == 403
    op.refresh_from_db()
    assert op.status == Operation.Status.QUEUED


def test_it_sends_non_staff_to_the_login_page(client, alice):
    client.force_login(alice)
    for url in (ENVS, OPS):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_it_filters_envs_by_expiry(client, root, alice, template):
    make_env(alice, name="soon", lifetime=30 * 60)
    make_env(alice, name="today", lifetime=12 * 3600)
    make_env(alice, name="later", lifetime=3 * 86400)

    def names(query: str) -> set[str]:
        return {e.name for e in client.get(f"{ENVS}?{query}").context["cl"].result_list}

    assert names("expiry=1h") == {"soon"}
    assert names("expiry=24h") == {"soon", "today"}
    assert names("expiry=later") == {"later"}
    assert names("expiry=expired") == set()
    with time_machine.travel(Env.objects.get(name="soon").end_at + timedelta(minutes=1)):
        assert names("expiry=expired") == {"soon"}


def test_it_searches_and_filters_envs(client, root, alice, bob, template):
    make_env(alice, name="mine")
    make_env(bob, name="theirs", deny_outgoing=True)

    def names(query: str) -> set[str]:
        return {e.name for e in client.get(f"{ENVS}?{query}").context["cl"].result_list}

    assert names("q=bob") == {"theirs"}
    assert names("q=mine") == {"mine"}
    assert names("deny_outgoing__exact=1") == {"theirs"}
    assert names(f"owner__id__exact={alice.pk}") == {"mine"}
    assert names("status__exact=active") == {"mine", "theirs"}


def test_it_lists_envs_and_operations_in_a_constant_number_of_queries(client, root, alice, template,
                                                                      settings):
    # Ten Envs of two VMs: more than the default quotas allow.
    settings.TT_QUOTA_ENVS, settings.TT_QUOTA_VMS, settings.TT_QUOTA_VCPUS = 10, 20, 20
    make_env(alice, name="first", vms=2)
    one = count_queries(client, ENVS), count_queries(client, OPS)
    for i in range(9):
        make_env(alice, name=f"more{i}", vms=2)
    assert (count_queries(client, ENVS), count_queries(client, OPS)) == one


# --- stuck operations --------------------------------------------------------------------


@pytest.fixture
def stuck_start(alice, template, run_tasks):
    """A vm_start whose worker died 2 minutes ago (its lease long run out)."""
    env = make_env(alice, run=run_tasks)
    vm = env.vms.get()
    with run_tasks():
        vm_stop(vm=vm, by=alice)
    op = vm_start(vm=vm, by=alice)  # not run: its task was lost
    now = timezone.now()
    Operation.objects.filter(pk=op.pk).update(
        status="running", attempt=1, worker="node-b:4711/0000.0.0", heartbeat_at=now - timedelta(minutes=2),
        started_at=now - timedelta(minutes=2),
    )
    return op


def operator_events(verb: str) -> list[tuple]:
    return [(e.user.username if e.user else e.system, e.interface, e.object_type, e.object_id, e.owner_id,
             e.result, e.code) for e in AuditEvent.objects.filter(verb=verb).order_by("pk")]


def test_it_lists_stuck_operations_with_their_age_and_last_heartbeat(client, root, stuck_start):
    response = client.get(OPS, {"lease": "stuck"})
    rows = response.context["cl"].result_list
    assert [op.pk for op in rows] == [stuck_start.pk]
    page = response.content.decode()
    assert "stuck: node-b pid 4711, last heartbeat 2 m ago" in page
    assert client.get(OPS, {"lease": "live"}).context["cl"].result_count == 1


def test_it_retries_a_stuck_operation_now(client, root, stuck_start, run_tasks):
    with run_tasks():
        response = post_action(client, OPS, "retry_now", [stuck_start])
    assert ("success", "Handed to a worker: 1 operation.") in messages_of(response)
    stuck_start.refresh_from_db()
    assert (stuck_start.status, stuck_start.attempt) == ("succeeded", 2)
    assert stuck_start.vm.status == "running"
    assert operator_events("operation.retry") == [
        ("root", "admin", "vm", str(stuck_start.vm_id), stuck_start.env.owner_id, "ok", "")]


def test_it_refuses_to_retry_an_operation_a_live_worker_holds(client, root, stuck_start):
    Operation.objects.filter(pk=stuck_start.pk).update(heartbeat_at=timezone.now())
    response = post_action(client, OPS, "retry_now", [stuck_start])
    (level, text), = messages_of(response)
    assert level == "error" and "node-b pid 4711" in text and "not stuck" in text
    stuck_start.refresh_from_db()
    assert (stuck_start.status, stuck_start.attempt) == ("running", 1)
    assert operator_events("operation.retry") == [
        ("root", "admin", "vm", str(stuck_start.vm_id), stuck_start.env.owner_id, "refused", "illegal_state")]


def test_it_ends_a_stuck_operation_now_and_settles_its_vm(client, root, stuck_start):
    response = post_action(client, OPS, "fail_now", [stuck_start])
    assert ("success", "Ended: 1 operation.") in messages_of(response)
    stuck_start.refresh_from_db()
    assert (stuck_start.status, stuck_start.error_code) == ("failed", "cancelled")
    assert "ended by root" in stuck_start.error_message
    assert stuck_start.vm.status == "stopped"  # what the node has: it never started
    assert operator_events("operation.fail") == [
        ("root", "admin", "vm", str(stuck_start.vm_id), stuck_start.env.owner_id, "ok", "")]


def test_only_staff_may_end_or_retry_an_operation(alice, stuck_start):
    for service in (operation_fail, operation_retry):
        with pytest.raises(Forbidden):
            service(op=stuck_start, by=alice)
    stuck_start.refresh_from_db()
    assert stuck_start.status == "running"


# --- staff act through permissions -----------------------------------------------------------


def test_staff_without_permissions_see_no_env_and_act_on_none(client, stan, alice, template, run_tasks,
                                                              db_state):
    env = make_env(alice, run=run_tasks)
    client.force_login(stan)
    before = db_state()
    for url in (ENVS, OPS, reverse("admin:envs_env_change", args=[env.pk])):
        assert client.get(url).status_code == 403, url
    response = client.post(ENVS, {"action": "destroy", "_selected_action": [env.pk], "index": "0"})
    assert response.status_code == 403
    assert db_state() == before


def test_staff_are_offered_and_allowed_only_what_their_permissions_say(client, stan, alice, template,
                                                                       run_tasks, db_state):
    env = make_env(alice, run=run_tasks)
    grant(stan, "envs.view_env")
    client.force_login(stan)
    assert offered_actions(client, ENVS) == set()  # may look, may not act
    grant(stan, "envs.change_env")
    stan = type(stan).objects.get(pk=stan.pk)  # has_perm caches per user object
    assert offered_actions(client, ENVS) == {"start", "stop", "extend_by_a_day", "deny_outgoing",
                                             "allow_outgoing"}
    # Destroying takes envs.delete_env: posted anyway, it is refused and nothing changes.
    before = db_state()
    post_action(client, ENVS, "destroy", [env])
    assert db_state() == before
    with run_tasks():
        response = post_action(client, ENVS, "stop", [env])
    assert ("success", "Stop queued: 1 env.") in messages_of(response)
    assert Operation.objects.get(kind=EnvKind.ENV_STOP).requested_by == stan
    with pytest.raises(Forbidden, match=r"envs\.delete_env"):
        env_destroy(env=env, by=stan)
    grant(stan, "envs.delete_env")
    assert "destroy" in offered_actions(client, ENVS)


def test_ending_or_retrying_an_operation_takes_the_change_permission(client, stan, stuck_start):
    grant(stan, "operations.view_operation")
    client.force_login(stan)
    assert offered_actions(client, OPS) == set()
    for service in (operation_fail, operation_retry):
        with pytest.raises(Forbidden, match=r"operations\.change_operation"):
            service(op=stuck_start, by=type(stan).objects.get(pk=stan.pk))
    grant(stan, "operations.change_operation")
    assert offered_actions(client, OPS) == {"retry_now", "fail_now"}
    response = post_action(client, OPS, "fail_now", [stuck_start])
    assert ("success", "Ended: 1 operation.") in messages_of(response)
