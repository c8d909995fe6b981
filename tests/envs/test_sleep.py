"""Sleep when idle (envs/sleep.py) on libvirt's test driver: the idle check, the sleep and
wake operations, the port map, the bounds and the API field. The real node's traffic and
waker: tests/integration/test_sleep.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from envs import sleep
from envs.kinds import EnvKind
from envs.models import Env
from envs.services import env_create, env_set_idle_suspend
from nodes.registry import get_engine
from operations.models import Operation
from tests.support import done, refused
from ttportal.errors import InvalidInput
from vms.models import Vm
from vms.new_vms import NewVm

pytestmark = pytest.mark.usefixtures("frozen_clock")


def make_env(alice, run_tasks, **kwargs) -> Env:
    with run_tasks():
        op = env_create(owner=alice, by=alice, name="sleepy",
                        vms=[NewVm(name="web", template="tt/busybox", ports=[80, "53/udp"])], **kwargs)
    assert done(op).status == "succeeded", op.error_message
    return Env.objects.get(pk=op.env_id)


def check(node, run_tasks, minutes: float = 0):
    with run_tasks():
        return sleep.check_node(node, timezone.now() + timedelta(minutes=minutes))


def public(env: Env, proto: str) -> int:
    return env.vms.get().port_mappings.get(protocol=proto).public_port


def test_an_env_idle_for_its_minutes_sleeps_its_tcp_ports_leading_to_the_waker(
        alice, node, template, run_tasks, firewall, settings):
    env = make_env(alice, run_tasks, idle_suspend=5)
    assert check(node, run_tasks, minutes=4.9) == []
    (op,) = check(node, run_tasks, minutes=5)
    op = done(op)
    assert (op.kind, op.status, op.requested_by) == (EnvKind.ENV_SLEEP, "succeeded", None)
    env.refresh_from_db()
    vm = env.vms.get()
    assert env.asleep_since is not None and vm.status == Vm.Status.SUSPENDED
    tcp, udp = public(env, "tcp"), public(env, "udp")
    assert firewall.tables["wake_tcp"] == {(tcp,): (node.gateway_ip, settings.TT_WAKER_PORT)}
    # The VM's own elements stay: a wake takes only the waker's away.
    assert firewall.port_map[("tcp", tcp)] == (vm.ip, 80)
    assert ("udp", udp) in firewall.port_map
    # Asleep: nothing more to do while nothing comes.
    assert check(node, run_tasks, minutes=20) == []


def test_a_new_connection_keeps_it_awake(alice, node, template, run_tasks, firewall):
    env = make_env(alice, run_tasks, idle_suspend=5)
    check(node, run_tasks, minutes=1)
    get_engine(node).firewall.connections[("tcp", public(env, "tcp"))] = 3
    assert check(node, run_tasks, minutes=4) == []  # activity seen at +4 min
    assert check(node, run_tasks, minutes=8.9) == []
    assert len(check(node, run_tasks, minutes=9)) == 1


def test_console_exec_or_files_keep_it_awake(alice, node, template, run_tasks, time_machine):
    from vms.guest_target import mark_active

    env = make_env(alice, run_tasks, idle_suspend=5)
    time_machine.shift(timedelta(minutes=4))
    mark_active(env.pk)
    assert check(node, run_tasks, minutes=4.9) == []  # 4 + 4.9 from the start: 4.9 idle
    assert len(check(node, run_tasks, minutes=5)) == 1


def test_an_env_without_idle_suspend_never_sleeps(alice, node, template, run_tasks, settings):
    make_env(alice, run_tasks)
    assert check(node, run_tasks, minutes=10_000) == []


def test_the_sites_default_applies_to_an_env_created_without_one(alice, node, template, run_tasks, settings):
    settings.TT_IDLE_SUSPEND_DEFAULT_MIN = 30
    assert make_env(alice, run_tasks).idle_suspend == 30


def test_a_wake_restores_its_vms_and_points_the_ports_back(alice, node, template, run_tasks, firewall):
    env = make_env(alice, run_tasks, idle_suspend=1)
    check(node, run_tasks, minutes=2)
    with run_tasks():
        op = sleep.env_wake(env.pk, why="a test")
    op = done(op)
    assert (op.kind, op.status) == (EnvKind.ENV_WAKE, "succeeded"), op.error_message
    env.refresh_from_db()
    assert env.asleep_since is None and env.vms.get().status == Vm.Status.RUNNING
    assert firewall.tables["wake_tcp"] == {}
    assert sleep.env_wake(env.pk, why="again") is None


def test_the_waker_is_told_where_to_send_a_connection(alice, node, template, run_tasks, firewall, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    env = make_env(alice, run_tasks, idle_suspend=1)
    vm = env.vms.get()
    check(node, run_tasks, minutes=2)
    assert sleep.wake_for(node.pk, public(env, "tcp"), "198.18.0.2") == (vm.ip, 80)
    env.refresh_from_db()
    assert env.asleep_since is None and firewall.tables["wake_tcp"] == {}
    # A port nobody forwards, or a client the VM's blacklist blocks: refused.
    assert sleep.wake_for(node.pk, 1, "198.18.0.2") is None
    Vm.objects.filter(pk=vm.pk).update(net_blacklist=["198.18.0.9"])
    assert sleep.wake_for(node.pk, public(env, "tcp"), "198.18.0.9") is None


def test_a_udp_datagram_to_a_sleeping_env_wakes_it(alice, node, template, run_tasks, firewall):
    env = make_env(alice, run_tasks, idle_suspend=1)
    check(node, run_tasks, minutes=2)
    get_engine(node).firewall.connections[("udp", public(env, "udp"))] = 1
    (op,) = check(node, run_tasks, minutes=3)
    assert (done(op).kind, op.status) == (EnvKind.ENV_WAKE, "succeeded")


@pytest.mark.parametrize("value", [0, -1, 7 * 24 * 60 + 1, "5", 1.5, True])
def test_idle_suspend_out_of_bounds_is_refused_naming_the_field(alice, node, template, db_state, value):
    with refused(db_state, InvalidInput) as caught:
        env_create(owner=alice, by=alice, name="x", vms=[NewVm(name="web", template="tt/busybox")],
                   idle_suspend=value)
    assert caught.value.field == "idle_suspend"
    assert "between 1 and 10080 minutes" in str(caught.value)


def test_the_owner_changes_it(alice, node, template, run_tasks, db_state):
    env = make_env(alice, run_tasks)
    assert env_set_idle_suspend(env=env, minutes=15, by=alice).idle_suspend == 15
    assert env_set_idle_suspend(env=env, minutes=None, by=alice).idle_suspend is None
    with refused(db_state, InvalidInput) as caught:
        env_set_idle_suspend(env=env, minutes=0, by=alice)
    assert caught.value.field == "idle_suspend"


# --- the API ---------------------------------------------------------------------------


def test_the_api_takes_and_shows_idle_suspend(alice, bob, node, template):
    from tests.api_support import client_for

    api = client_for(alice)
    response = api.post("/api/envs/", {"name": "demo", "vms": [{"name": "web", "template": "tt/busybox"}],
                                       "idle_suspend": 30})
    assert response.status_code == 202, response.json()
    env = api.get(f"/api/envs/{response.json()['env']}/").json()
    assert (env["idle_suspend"], env["asleep_since"]) == (30, None)
    changed = api.post(f"/api/envs/{env['id']}/idle-suspend/", {"minutes": None})
    assert changed.status_code == 200 and changed.json()["idle_suspend"] is None
    # Out of bounds: 400 naming the field and the rule; another user's Env: 404.
    bad = api.post(f"/api/envs/{env['id']}/idle-suspend/", {"minutes": 0})
    assert (bad.status_code, bad.json()["field"]) == (400, "minutes")
    assert "between 1 and 10080 minutes" in bad.json()["message"]
    bad = api.post("/api/envs/", {"name": "other", "vms": [{"name": "web", "template": "tt/busybox"}],
                                  "idle_suspend": 10081})
    assert (bad.status_code, bad.json()["field"]) == (400, "idle_suspend")
    assert client_for(bob).post(f"/api/envs/{env['id']}/idle-suspend/", {"minutes": 5}).status_code == 404


# --- the portal ------------------------------------------------------------------------


def test_the_portal_creates_an_env_that_sleeps_and_shows_it_asleep(client, alice, node, template, run_tasks):
    from django.urls import reverse

    from tests.envs.test_views import create_data

    client.force_login(alice)
    refused_page = client.post(reverse("envs:create"), create_data(template, idle_suspend="0"))
    assert refused_page.status_code == 200
    assert "between 1 and 10080 minutes" in refused_page.content.decode()
    with run_tasks():
        response = client.post(reverse("envs:create"), create_data(template, idle_suspend="1"))
    assert response.status_code == 302
    env = Env.objects.get(name="web")
    assert env.idle_suspend == 1
    assert "after 1 min idle" in client.get(reverse("envs:detail", args=[env.pk])).content.decode()
    check(node, run_tasks, minutes=2)
    page = client.get(reverse("envs:detail", args=[env.pk])).content.decode()
    assert "asleep since 2030-01-01 12:02 UTC" in page


def test_counters_written_again_by_a_rebuild_are_not_activity(alice, node, template, run_tasks):
    env = make_env(alice, run_tasks, idle_suspend=5)
    connections = get_engine(node).firewall.connections
    connections[("tcp", public(env, "tcp"))] = 7
    check(node, run_tasks, minutes=1)  # seen: active at +1
    connections[("tcp", public(env, "tcp"))] = 0  # the reconcile pass rebuilt the maps
    assert check(node, run_tasks, minutes=5.9) == []
    assert len(check(node, run_tasks, minutes=6)) == 1


def test_an_env_file_gives_idle_suspend_and_the_export_keeps_it(alice, node, template, settings):
    import envfile
    from envs import envfiles

    settings.TT_IDLE_SUSPEND_DEFAULT_MIN = 30
    ef = envfile.load("name: filed\nidle_suspend: null\nvms: [{name: x, template: tt/busybox}]\n")
    assert envfiles.env_up_from(ef, owner=alice, by=alice).env.idle_suspend is None
    ef = envfile.load("name: filed2\nidle_suspend: 15\nvms: [{name: x, template: tt/busybox}]\n")
    env = envfiles.env_up_from(ef, owner=alice, by=alice).env
    assert env.idle_suspend == 15
    assert "idle_suspend: 15" in envfiles.text_of(env)
    ef = envfile.load("name: filed3\nvms: [{name: x, template: tt/busybox}]\n")
    assert envfiles.env_up_from(ef, owner=alice, by=alice).env.idle_suspend == 30


# --- capacity --------------------------------------------------------------------------


def test_a_sleeping_env_gives_its_node_back_its_vcpus_and_memory(alice, node, template, run_tasks):
    from vms import node_usage
    from vms.models import NodeUsage

    env = make_env(alice, run_tasks, idle_suspend=1)
    vm = env.vms.get()
    held = NodeUsage.objects.get(node=node)
    assert (held.cpu, held.mem_mb) == (vm.cpu_num, vm.mem_mb)
    check(node, run_tasks, minutes=2)
    asleep = NodeUsage.objects.get(node=node)
    assert (asleep.cpu, asleep.mem_mb, asleep.saved_mb) == (0, 0, vm.mem_mb)
    assert node_usage.counted() == node_usage.kept()
    with run_tasks():
        sleep.env_wake(env.pk, why="a test")
    awake = NodeUsage.objects.get(node=node)
    assert (awake.cpu, awake.mem_mb, awake.saved_mb) == (vm.cpu_num, vm.mem_mb, 0)
    assert node_usage.counted() == node_usage.kept()


def test_a_wake_on_a_full_node_is_refused_and_says_why(alice, bob, node, template, run_tasks, firewall):
    from operations.models import Operation

    env = make_env(alice, run_tasks, idle_suspend=1)
    vm = env.vms.get()
    check(node, run_tasks, minutes=2)
    # Meanwhile the node's memory went to another Env.
    node.mem_capacity_mb = 1024
    node.save(update_fields=["mem_capacity_mb"])
    with run_tasks():
        env_create(owner=bob, by=bob, name="hog", vms=[NewVm(name="big", template="tt/busybox",
                                                                mem_mb=1024 - vm.mem_mb + 1)])
    assert sleep.wake_for(node.pk, public(env, "tcp"), "198.18.0.2") is None
    op = Operation.objects.filter(env=env, kind=EnvKind.ENV_WAKE).latest("pk")
    assert (op.status, op.error_code) == ("failed", "no_capacity")
    assert f"node {node.name} has {vm.mem_mb - 1} MiB free, {vm.mem_mb} MiB needed" in op.error_message
    env.refresh_from_db()
    assert env.asleep_since is not None and env.vms.get().status == Vm.Status.SUSPENDED
    assert firewall.tables["wake_tcp"]  # still asleep: the next connection tries again
    # A client dialing in a loop meanwhile is refused by that record, not by a new one each.
    for _ in range(3):
        assert sleep.wake_for(node.pk, public(env, "tcp"), "198.18.0.2") is None
    assert Operation.objects.filter(env=env, kind=EnvKind.ENV_WAKE).count() == 1
    # In the audit log: one refused wake, by the waker, not one per connection.
    assert [(e.system, e.result, e.code) for e in AuditEvent.objects.filter(verb="env.wake")] == [
        (sleep.WAKER, "refused", "no_capacity")]
    # Once the refusal is old enough, the next connection tries again.
    Operation.objects.filter(pk=op.pk).update(finished_at=op.finished_at - sleep.REFUSED_WAKE_HOLDS * 2)
    assert sleep.wake_for(node.pk, public(env, "tcp"), "198.18.0.2") is None
    assert Operation.objects.filter(env=env, kind=EnvKind.ENV_WAKE).count() == 2
    assert AuditEvent.objects.filter(verb="env.wake", result="refused").count() == 2


def test_my_envs_marks_a_sleeping_env(client, alice, node, template, run_tasks):
    from django.urls import reverse

    env = make_env(alice, run_tasks, idle_suspend=1)
    client.force_login(alice)
    assert ">asleep</span>" not in client.get(reverse("envs:list")).content.decode()
    check(node, run_tasks, minutes=2)
    page = client.get(reverse("envs:list")).content.decode()
    assert ">asleep</span>" in page and "Asleep since 2030-01-01 12:02 UTC" in page
    assert env.name in page


def test_starting_a_sleeping_env_wakes_it(alice, bob, node, template, run_tasks, firewall):
    from envs.services import env_start
    from ttportal.errors import Forbidden

    env = make_env(alice, run_tasks, idle_suspend=1)
    check(node, run_tasks, minutes=2)
    env.refresh_from_db()
    with pytest.raises(Forbidden):
        env_start(env=env, by=bob)
    with run_tasks():
        op = env_start(env=env, by=alice)
    assert (done(op).kind, op.status) == (EnvKind.ENV_WAKE, "succeeded")
    assert op.params["why"] == "started by alice"
    env.refresh_from_db()
    assert env.asleep_since is None and firewall.tables["wake_tcp"] == {}


def test_the_env_page_changes_it(client, alice, node, template, run_tasks):
    from django.urls import reverse

    env = make_env(alice, run_tasks)
    client.force_login(alice)
    url = reverse("envs:idle_suspend", args=[env.pk])
    page = client.post(url, {"minutes": "45"}, follow=True).content.decode()
    assert "sleepy sleeps after 45 min idle." in page and "after 45 min idle" in page
    env.refresh_from_db()
    assert env.idle_suspend == 45
    page = client.post(url, {"minutes": "0"}, follow=True).content.decode()
    assert "Sleep when idle (minutes): must be an integer between 1 and 10080 minutes" in page
    page = client.post(url, {"minutes": "soon"}, follow=True).content.decode()
    assert "Sleep when idle (minutes): must be an integer between 1 and 10080 minutes" in page
    client.post(url, {"minutes": ""})
    env.refresh_from_db()
    assert env.idle_suspend is None


def test_starting_one_vm_of_a_sleeping_env_wakes_the_env(alice, node, template, run_tasks, firewall):
    from tests.api_support import client_for

    env = make_env(alice, run_tasks, idle_suspend=1)
    check(node, run_tasks, minutes=2)
    vm = env.vms.get()
    with run_tasks():
        response = client_for(alice).post(f"/api/vms/{vm.pk}/start/")
    assert response.status_code == 202, response.json()
    op = done(Operation.objects.get(pk=response.json()["id"]))
    assert (op.kind, op.status) == (EnvKind.ENV_WAKE, "succeeded")
    assert op.params["why"] == "VM web started by alice"
    env.refresh_from_db()
    vm.refresh_from_db()
    assert env.asleep_since is None and vm.asleep_at is None and vm.status == Vm.Status.RUNNING
    assert firewall.tables["wake_tcp"] == {}  # its ports lead to it again


def test_going_into_a_vm_of_a_sleeping_env_wakes_it_and_asks_to_retry(alice, bob, node, template, run_tasks):
    from engines.specs import Feature
    from ttportal.errors import Forbidden, Waking
    from vms.guest_target import guest_target

    env = make_env(alice, run_tasks, idle_suspend=1)
    check(node, run_tasks, minutes=2)
    vm = env.vms.get()
    with pytest.raises(Forbidden):  # someone else's: no wake either
        guest_target(vm, Feature.CONSOLE, by=bob)
    assert not Operation.objects.filter(kind=EnvKind.ENV_WAKE).exists()
    with run_tasks(), pytest.raises(Waking) as refused_now:
        guest_target(vm, Feature.CONSOLE, by=alice)
    assert refused_now.value.retry_after == 3
    assert refused_now.value.as_dict()["code"] == "illegal_state"
    op = done(Operation.objects.get(kind=EnvKind.ENV_WAKE))
    assert (op.status, op.params["why"]) == ("succeeded", "console by alice")
    assert f"operation {op.pk}" in str(refused_now.value)
    # Once it runs, the same request goes in.
    assert guest_target(vm, Feature.CONSOLE, by=alice).vm == vm


# --- the audit log: who slept and woke it ---------------------------------------------------


def events(verb: str) -> list[tuple]:
    return [(e.verb, e.user, e.system, e.interface, e.owner_id, e.result, e.code)
            for e in AuditEvent.objects.filter(verb=verb).order_by("pk")]


def test_the_idle_check_puts_it_to_sleep_as_the_system_named_in_the_log(alice, node, template, run_tasks):
    env = make_env(alice, run_tasks, idle_suspend=5)
    (op,) = check(node, run_tasks, minutes=5)
    assert events("env.sleep") == [("env.sleep", None, sleep.IDLE_CHECK, "system", alice.pk, "ok", "")]
    event = AuditEvent.objects.get(verb="env.sleep")
    assert (event.env_id, event.object_name, event.detail) == (env.pk, "sleepy", {"operation": op.pk})
    assert event.actor == "system: tt: idle check"
    check(node, run_tasks, minutes=20)  # asleep: nothing more
    assert len(events("env.sleep")) == 1


def test_a_connection_wakes_it_as_the_waker_once(alice, node, template, run_tasks, firewall):
    env = make_env(alice, run_tasks, idle_suspend=1)
    check(node, run_tasks, minutes=2)
    assert sleep.wake_for(node.pk, public(env, "tcp"), "198.18.0.2") is not None
    assert sleep.wake_for(node.pk, public(env, "tcp"), "198.18.0.3") is not None  # awake: no new wake
    assert events("env.wake") == [("env.wake", None, sleep.WAKER, "system", alice.pk, "ok", "")]
    why = AuditEvent.objects.get(verb="env.wake").detail["why"]
    assert why == f"a connection from 198.18.0.2 to port {public(env, 'tcp')}"


def test_a_datagram_wakes_it_as_the_idle_check(alice, node, template, run_tasks, firewall):
    env = make_env(alice, run_tasks, idle_suspend=1)
    check(node, run_tasks, minutes=2)
    get_engine(node).firewall.connections[("udp", public(env, "udp"))] = 1
    check(node, run_tasks, minutes=3)
    assert events("env.wake") == [("env.wake", None, sleep.IDLE_CHECK, "system", alice.pk, "ok", "")]


def test_a_wake_already_under_way_records_nothing_more(alice, node, template, run_tasks):
    env = make_env(alice, run_tasks, idle_suspend=1)
    check(node, run_tasks, minutes=2)
    first = sleep.env_wake(env.pk, why="a test")  # queued: its task does not run here
    assert sleep.env_wake(env.pk, why="again") == first
    assert [e.detail for e in AuditEvent.objects.filter(verb="env.wake")] == [
        {"why": "a test", "operation": first.pk}]


def test_the_portals_start_button_on_a_sleeping_env_is_one_start_by_the_user(
        client, alice, node, template, run_tasks, firewall):
    from django.urls import reverse

    env = make_env(alice, run_tasks, idle_suspend=1)
    check(node, run_tasks, minutes=2)
    client.force_login(alice)
    with run_tasks():
        response = client.post(reverse("envs:start", args=[env.pk]))
    assert response.status_code == 302
    env.refresh_from_db()
    assert env.asleep_since is None
    assert events("env.start") == [("env.start", alice, "", "portal", alice.pk, "ok", "")]
    assert events("env.wake") == []  # the start is the action; its operation is the wake


def test_opening_a_console_on_a_sleeping_env_records_the_wake_by_the_user_and_the_console_refused(
        alice, node, template, run_tasks):
    from audit import context
    from ttportal.errors import Waking
    from vms import console

    env = make_env(alice, run_tasks, idle_suspend=1)
    check(node, run_tasks, minutes=2)
    vm = env.vms.get()
    with context.using(context.Origin(interface="portal", address="192.0.2.8")), \
            run_tasks(), pytest.raises(Waking):
        console.open_session(vm.pk, alice, console.VIA_PORTAL)
    assert events("env.wake") == [("env.wake", alice, "", "portal", alice.pk, "ok", "")]
    assert AuditEvent.objects.get(verb="env.wake").detail["why"] == "console by alice"
    assert events("vm.console") == [("vm.console", alice, "", "portal", alice.pk, "refused", "illegal_state")]
    # Once awake, the console opens: one more vm.console, no more wakes.
    console.open_session(vm.pk, alice, console.VIA_PORTAL)
    assert [e[5] for e in events("vm.console")] == ["refused", "ok"]
    assert len(events("env.wake")) == 1
