"""Placement counts disk: what a node's VMs may take (their disks, their snapshots, a
suspended VM's saved memory, warm spares) against the node's capacity less the reserve,
times the overcommit ratio; and what new VMs write at once against its real free space.
Snapshots and suspends are checked against the node too. Refusals are 409 no_capacity
naming the disk."""

from __future__ import annotations

import pytest
from django.utils import timezone

from engines.specs import DiskSpace
from envs.services import env_create
from nodes.models import NodeHeartbeat
from tests.api_support import client_for
from tests.support import done, refused, take_snapshot
from ttportal.errors import NoCapacity
from vms import heartbeat, warm
from vms.models import Vm, WarmPool
from vms.new_vms import NewVm, wanted_features
from vms.placement import Ask, Placer, immediate_mb
from vms.services import snapshot_create, vm_suspend

pytestmark = pytest.mark.usefixtures("frozen_clock")

RESERVE = 100  # MiB


@pytest.fixture(autouse=True)
def disk_settings(settings):
    settings.TT_NODE_DISK_RESERVE = RESERVE
    settings.TT_NODE_DISK_OVERCOMMIT = 1.0


def give(node, mb: int) -> None:
    """The node has `mb` MiB to give to guests, once the reserve is kept."""
    node.disk_capacity_mb = RESERVE + mb
    node.save()


def reported(node, *, total_mb: int | None = None, free_mb: int | None = None) -> None:
    NodeHeartbeat.objects.update_or_create(node=node, defaults=dict(
        beat_at=timezone.now(), worker="here:1", ports_free=1, addresses_free=1, vms_running=0,
        disk_total_mb=total_mb, disk_free_mb=free_mb))


def ask(template, *, disk: int, now: int = 0, mem: int = 64) -> Ask:
    wanted = wanted_features(Vm.NetKind.NAT, rand_uuid=True, keep_image=False, disk_mb=disk,
                             template=template)
    return Ask.of(template, 1, mem, wanted, disk_mb=disk, disk_now_mb=now)


def why(template, node, **kwargs) -> tuple[str, str] | None:
    found = Placer().refusals(ask(template, **kwargs)).get(node.pk)
    return None if found is None else (found[0].__name__, found[1])


def create(owner, name: str, *disks: int, **fields):
    return env_create(owner=owner, by=owner, name=name, vms=[
        NewVm(name=f"vm{i}", template="tt/busybox", disk_mb=d, **fields) for i, d in enumerate(disks)])


def test_a_node_takes_disks_up_to_what_it_gives_and_refuses_one_mib_more(alice, node, template):
    give(node, 100)
    create(alice, "e1", 40, 40)
    assert why(template, node, disk=20) is None  # exactly at the limit
    assert why(template, node, disk=21) == ("disk", "disk: 20 MiB left to give, 21 MiB asked")


def test_a_create_past_the_disk_is_refused_409_naming_the_disk(alice, node, template, db_state):
    give(node, 100)
    create(alice, "e1", 60)
    before = db_state()
    response = client_for(alice).post("/api/envs/", {"name": "big", "vms": [
        {"name": "a", "template": "tt/busybox", "disk_mb": 30},
        {"name": "b", "template": "tt/busybox", "disk_mb": 30},
    ]}, format="json")
    assert response.status_code == 409, response.content
    body = response.json()
    assert (body["code"], body["field"]) == ("no_capacity", "vms[1].template")
    # The first VM of the request is counted: 100 - 60 - 30 left.
    assert body["message"] == "no node has room: local-test: disk: 10 MiB left to give, 30 MiB asked"
    assert db_state() == before


def test_without_a_capacity_set_the_reported_size_less_the_reserve_is_given(alice, node, template):
    reported(node, total_mb=RESERVE + 50, free_mb=10_000)
    create(alice, "e1", 30)
    assert why(template, node, disk=20) is None
    assert why(template, node, disk=21) == ("disk", "disk: 20 MiB left to give, 21 MiB asked")


def test_a_node_whose_disk_nobody_knows_is_not_limited_by_it(alice, node, template):
    create(alice, "e1", 10_000)
    assert why(template, node, disk=10_000) is None


def test_the_overcommit_ratio_promises_thin_disks_beyond_the_space(alice, node, template, settings):
    give(node, 100)
    settings.TT_NODE_DISK_OVERCOMMIT = 2.5  # 250 MiB may be promised
    create(alice, "e1", 200)
    assert why(template, node, disk=50) is None
    assert why(template, node, disk=51) == ("disk", "disk: 50 MiB left to give, 51 MiB asked")


def test_the_real_free_space_less_the_reserve_must_exceed_what_is_written_at_once(node, template):
    reported(node, total_mb=100_000, free_mb=RESERVE + 64)
    assert why(template, node, disk=20, now=63) is None
    assert why(template, node, disk=20, now=64) == (
        "disk", f"disk: 64 MiB free over the {RESERVE} MiB reserve, 64 MiB needed now")
    reported(node, total_mb=100_000, free_mb=RESERVE)  # only the reserve left: nothing fits
    assert why(template, node, disk=20) == ("disk", f"disk: 0 MiB free over the {RESERVE} MiB reserve, "
                                                    "0 MiB needed now")


def test_what_a_request_writes_at_once_is_counted_across_its_vms(node, template):
    reported(node, total_mb=100_000, free_mb=RESERVE + 100)
    placer = Placer()
    placer.place(ask(template, disk=20, now=60), "template")
    with pytest.raises(NoCapacity) as caught:
        placer.place(ask(template, disk=20, now=60), "template")
    assert "disk: 40 MiB free over the 100 MiB reserve, 60 MiB needed now" in caught.value.message


def test_an_engine_that_copies_its_template_needs_the_template_s_size_at_once(node, template):
    node.kind = "firecracker"
    assert immediate_mb(node, ask(template, disk=100)) == template.size_mb == 20
    node.kind = "libvirt"  # a thin overlay over the template: nothing at once
    assert immediate_mb(node, ask(template, disk=100)) == 0


def test_each_snapshot_counts_as_much_as_its_vm_s_disk(alice, node, template, run_tasks, make_env):
    give(node, 100)
    env = make_env(alice, vms=[NewVm(name="vm0", template="tt/busybox", disk_mb=30)])
    take_snapshot(env.vms.get(), run_tasks, "s1")
    take_snapshot(env.vms.get(), run_tasks, "s2")
    assert why(template, node, disk=10) is None  # 30 + 2 x 30 = 90 taken
    assert why(template, node, disk=11) == ("disk", "disk: 10 MiB left to give, 11 MiB asked")


def test_a_snapshot_that_would_overflow_the_node_is_refused(alice, node, template, make_env, db_state):
    give(node, 100)
    env = make_env(alice, vms=[NewVm(name="vm0", template="tt/busybox", disk_mb=60)])
    vm = env.vms.get()
    with refused(db_state, NoCapacity) as caught:
        snapshot_create(vm=vm, name="s1", by=alice)
    assert caught.value.code == "no_capacity"
    assert caught.value.message == ("node local-test has no room for a snapshot of VM vm0 (up to its disk, "
                                    "60 MiB): disk: 40 MiB left to give, 60 MiB asked")
    response = client_for(alice).post(f"/api/vms/{vm.pk}/snapshots/", {"name": "s1"}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "no_capacity"


def test_a_suspended_vm_s_saved_memory_is_counted(alice, node, template, run_tasks, make_env):
    give(node, 200)
    env = make_env(alice, vms=[NewVm(name="vm0", template="tt/busybox", disk_mb=50, mem_mb=100)])
    with run_tasks():
        op = vm_suspend(vm=env.vms.get(), by=alice)
    assert done(op).status == "succeeded", op.error_message
    assert why(template, node, disk=50) is None  # 50 + 100 saved
    assert why(template, node, disk=51) == ("disk", "disk: 50 MiB left to give, 51 MiB asked")


def test_a_suspend_whose_memory_would_overflow_the_node_is_refused(alice, node, template, make_env, db_state):
    give(node, 200)
    env = make_env(alice, vms=[NewVm(name="vm0", template="tt/busybox", disk_mb=50, mem_mb=200)])
    with refused(db_state, NoCapacity) as caught:
        vm_suspend(vm=env.vms.get(), by=alice)
    assert caught.value.message == ("node local-test has no room for the saved memory of VM vm0 (200 MiB): "
                                    "disk: 150 MiB left to give, 200 MiB asked")


def test_a_suspend_needs_its_memory_free_on_the_disk_now(alice, node, template, make_env, db_state):
    env = make_env(alice, vms=[NewVm(name="vm0", template="tt/busybox", mem_mb=128)])
    reported(node, total_mb=100_000, free_mb=RESERVE + 128)
    with refused(db_state, NoCapacity) as caught:
        vm_suspend(vm=env.vms.get(), by=alice)
    assert caught.value.message.endswith(
        f"disk: 128 MiB free over the {RESERVE} MiB reserve, 128 MiB needed now")


def spare_pool(node, template, olga, run_tasks, keep: str) -> WarmPool:
    with run_tasks():
        return warm.pool_save(pool=WarmPool(node=node, template=template, size=2, keep=keep,
                                            vm_sizes=[{"cpu_num": 1, "mem_mb": 64, "disk_mb": 30}]), by=olga)


def test_saved_spares_count_their_disks_and_saved_memory(node, template, olga, run_tasks):
    give(node, 300)
    pool = spare_pool(node, template, olga, run_tasks, "saved")
    assert pool.spares.filter(status=Vm.Status.SUSPENDED).count() == 2
    assert why(template, node, disk=110) is None  # 2 x (30 + 64) = 188 taken
    assert why(template, node, disk=113) == ("disk", "disk: 112 MiB left to give, 113 MiB asked")


def test_paused_spares_hold_memory_not_disk(node, template, olga, run_tasks):
    give(node, 300)
    spare_pool(node, template, olga, run_tasks, "paused")
    assert why(template, node, disk=240) is None  # 2 x 30 taken
    assert why(template, node, disk=241) == ("disk", "disk: 240 MiB left to give, 241 MiB asked")


def test_a_pool_fills_only_as_far_as_the_disk_allows(node, template, olga, run_tasks):
    give(node, 100)  # room for one spare of 30 + 64 saved
    pool = spare_pool(node, template, olga, run_tasks, "saved")
    assert pool.spares.live().count() == 1


def test_taking_a_spare_needs_no_disk_again(alice, node, template, olga, run_tasks):
    give(node, 200)
    spare_pool(node, template, olga, run_tasks, "saved")  # 2 x 94 = 188 of 200
    with run_tasks():
        op = env_create(owner=alice, by=alice, name="warm", vms=[
            NewVm(name="a", template="tt/busybox", mem_mb=64, disk_mb=30)])
    assert done(op).status == "succeeded", op.error_message
    assert Vm.objects.get(env=op.env, name="a").start_kind == "warm"


def test_a_beat_reports_the_disk_its_engine_sees(node, monkeypatch):
    space = DiskSpace(total_bytes=10 << 30, free_bytes=3 << 30)
    monkeypatch.setattr(heartbeat, "disk_space", lambda n: space)
    beat = heartbeat.write_heartbeat(node)
    assert (beat.disk_total_mb, beat.disk_free_mb) == (10 * 1024, 3 * 1024)


def test_a_beat_of_the_test_driver_reports_no_disk(node):
    beat = heartbeat.write_heartbeat(node)
    assert (beat.disk_total_mb, beat.disk_free_mb) == (None, None)
