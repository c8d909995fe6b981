"""Warm pools: spares booted and saved ahead, taken by creates (vms/warm.py). On libvirt's
test driver; the real guests are tests/integration/test_warm.py's."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from engines.libvirt.engine import LibvirtEngine
from envs.models import Env
from envs.services import env_create, env_destroy
from operations.models import Operation
from tests.api_support import client_for
from tests.support import domain, done, refused
from ttportal.errors import ConflictingInput, IllegalState
from vms import warm
from vms.models import CLOUD_INIT, Vm, WarmPool
from vms.new_vms import NewVm
from vms.services import vm_add

pytestmark = pytest.mark.usefixtures("frozen_clock")


@pytest.fixture
def pool(node, template, olga, run_tasks):
    """Two spares of 1 vCPU, 128 MiB on the node, made and saved."""
    with run_tasks():
        made = warm.pool_save(pool=WarmPool(node=node, template=template, size=2,
                                            vm_sizes=[{"cpu_num": 1, "mem_mb": 128, "disk_mb": 0}]), by=olga)
    return made


def spares(pool: WarmPool) -> list[Vm]:
    return list(pool.spares.live().order_by("pk"))


def create(owner, run_tasks, name="e1", n=1, mem_mb=128) -> tuple[Operation, list[Vm]]:
    with run_tasks():
        op = env_create(owner=owner, by=owner, name=name,
                        vms=[NewVm(name=f"vm{i}", template="tt/busybox", mem_mb=mem_mb, ports=[80])
                             for i in range(n)])
    done(op)
    return op, list(Env.objects.get(pk=op.env_id).vms.order_by("name"))


def test_a_pool_fills_with_booted_and_saved_spares(pool):
    made = spares(pool)
    assert len(made) == 2
    for spare in made:
        assert spare.status == Vm.Status.SUSPENDED and spare.env == pool.env
        assert spare.warm_key == warm.warm_key_of(pool.template, "saved")
        assert spare.mac and spare.ip  # its own addresses, from the allocator
        assert domain(spare).hasManagedSaveImage(0)
    assert len({s.mac for s in made}) == 2 and len({s.ip for s in made}) == 2
    fill = Operation.objects.get(kind="warm_fill")
    assert fill.status == "succeeded" and "guest up" in fill.log and "memory saved" in fill.log


def test_a_create_takes_a_spare_restores_it_and_the_pool_refills(alice, pool, run_tasks):
    before = {s.pk: (s.mac, s.ip) for s in spares(pool)}
    op, (vm,) = create(alice, run_tasks)
    assert op.status == "succeeded", op.error_message
    assert vm.pk in before and (vm.mac, vm.ip) == before[vm.pk]  # the spare's own identity
    assert vm.status == Vm.Status.RUNNING and vm.start_kind == "warm" and vm.warm_pool is None
    assert vm.env.owner == alice and vm.name == "vm0"
    assert domain(vm).isActive() and not domain(vm).hasManagedSaveImage(0)
    assert vm.port_mappings.get().inner_port == 80
    assert "vm0: warm: restored from a saved spare" in op.log
    # The take queued a tend: the pool is full again, with a new spare.
    now = spares(pool)
    assert len(now) == 2 and vm.pk not in {s.pk for s in now}
    assert all(s.status == Vm.Status.SUSPENDED for s in now)


def test_a_size_no_pool_covers_boots_cold(alice, pool, run_tasks):
    op, (vm,) = create(alice, run_tasks, mem_mb=256)
    assert vm.start_kind == "cold" and vm.status == Vm.Status.RUNNING
    assert "vm0: cold: booted from the template" in op.log
    assert len(spares(pool)) == 2  # untouched


def test_more_vms_than_spares_take_them_all_and_boot_the_rest_cold(alice, pool, run_tasks):
    op, vms = create(alice, run_tasks, n=3)
    assert sorted(vm.start_kind for vm in vms) == ["cold", "warm", "warm"]
    assert {vm.node_id for vm in vms} == {pool.node_id}
    assert op.log.count("warm: restored from a saved spare") == 2 and op.log.count("cold: booted") == 1


def test_a_spare_that_will_not_restore_is_discarded_and_the_vm_boots_cold(alice, pool, run_tasks,
                                                                          monkeypatch):
    real_start = LibvirtEngine.start_vm

    def corrupt(self, spec):
        if domain_saved(spec.name):
            raise RuntimeError("cannot restore: the saved image is corrupt")
        return real_start(self, spec)

    monkeypatch.setattr(LibvirtEngine, "start_vm", corrupt)
    taken = spares(pool)[0]
    op, (vm,) = create(alice, run_tasks)
    assert op.status == "succeeded"  # the create does not fail
    assert vm.pk == taken.pk and vm.start_kind == "cold" and vm.status == Vm.Status.RUNNING
    assert (vm.mac, vm.ip) == (taken.mac, taken.ip)
    assert "warm spare did not restore (" in op.log
    assert "the saved image is corrupt): discarded, booting cold" in op.log
    assert "cold: booted" in op.log


def domain_saved(name: str) -> bool:
    from engines.libvirt.connection import get_connection
    from tests.conftest import TEST_URI

    return bool(get_connection(TEST_URI).lookupByName(name).hasManagedSaveImage(0))


def kernel_cmdline(vm: Vm) -> str:
    return ET.fromstring(domain(vm).XMLDesc(0)).findtext("./os/cmdline")


def test_only_spares_boot_zeroing_the_memory_they_free(node, template, olga, alice, run_tasks):
    template.kernel, template.cmdline = "/boot/vmlinuz", "console=ttyS0 quiet"
    template.save()
    with run_tasks():
        pool = warm.pool_save(pool=WarmPool(node=node, template=template, size=1,
                                            vm_sizes=[{"cpu_num": 1, "mem_mb": 128, "disk_mb": 0}]), by=olga)
    (spare,) = spares(pool)
    # Its saved memory holds only what its guest uses; a cold boot does not pay the zeroing.
    assert kernel_cmdline(spare) == "console=ttyS0 quiet init_on_free=1"
    _op, (vm,) = create(alice, run_tasks, mem_mb=256)
    assert vm.start_kind == "cold" and kernel_cmdline(vm) == "console=ttyS0 quiet"


def test_a_template_change_makes_its_spares_stale_and_they_are_replaced(alice, pool, olga, run_tasks):
    old = {s.pk for s in spares(pool)}
    template = pool.template
    template.cmdline = "console=ttyS0 quiet"
    template.save()
    # Not told yet (an edit outside the admin): no create takes a stale spare.
    _op, (vm,) = create(alice, run_tasks)
    assert vm.start_kind == "cold"
    with run_tasks():
        warm.template_changed(template)
    now = spares(pool)
    assert len(now) == 2 and not old & {s.pk for s in now}
    assert all(s.warm_key == warm.warm_key_of(template, "saved") and s.status == Vm.Status.SUSPENDED
               for s in now)
    assert Vm.objects.filter(pk__in=old, status=Vm.Status.DESTROYED).count() == 2
    assert Operation.objects.filter(kind="warm_discard", status="succeeded").exists()


def test_switching_a_pool_off_discards_its_spares_and_then_it_can_be_deleted(pool, olga, run_tasks, db_state):
    with refused(db_state, IllegalState):
        warm.pool_delete(pool=pool, by=olga)
    names = {s.engine_name for s in spares(pool)}
    pool.enabled = False
    with run_tasks():
        warm.pool_save(pool=pool, by=olga)
    assert spares(pool) == []
    from tests.support import domain_names

    assert not names & domain_names()  # nothing left on the node
    env = pool.env
    warm.pool_delete(pool=pool, by=olga)
    assert not WarmPool.objects.exists()
    env.refresh_from_db()
    assert env.status == Env.Status.DESTROYED


def test_spares_count_against_the_nodes_capacity(node, template, olga, run_tasks):
    node.mem_capacity_mb = 300  # room for two spares of 128 MiB
    node.save()
    with run_tasks():
        pool = warm.pool_save(pool=WarmPool(node=node, template=template, size=3,
                                            vm_sizes=[{"cpu_num": 1, "mem_mb": 128, "disk_mb": 0}]), by=olga)
    assert len(spares(pool)) == 2
    assert "no room for more on local-test: 44 MiB free, 128 MiB asked" in warm.tend_pool(pool.pk)


def test_a_pool_refuses_a_cloud_init_template_and_an_engine_that_cannot_save_memory(node, template, olga):
    template.features = [CLOUD_INIT]
    template.save()
    with pytest.raises(ConflictingInput, match="runs cloud-init"):
        warm.pool_save(pool=WarmPool(node=node, template=template, size=1, vm_sizes=[]), by=olga)
    assert not WarmPool.objects.exists()


def test_sizes_are_read_as_operators_write_them_and_bad_ones_name_the_rule(template):
    assert warm.parse_sizes("1x128\n 2 x 512/2048 \n\n1x128", template) == [
        {"cpu_num": 1, "mem_mb": 128, "disk_mb": 0}, {"cpu_num": 2, "mem_mb": 512, "disk_mb": 2048}]
    with pytest.raises(Exception, match='"<CPUs>x<memory MiB>"'):
        warm.parse_sizes("lots", template)
    with pytest.raises(ConflictingInput, match="below template tt/busybox's minimum"):
        warm.parse_sizes("1x32", template)


def test_a_failed_fill_leaves_no_spare_behind(node, template, olga, run_tasks, monkeypatch):
    def never_up(self, spec, *, timeout):
        raise RuntimeError("no TT-READY line")

    monkeypatch.setattr(LibvirtEngine, "wait_booted", never_up)
    with run_tasks():
        pool = warm.pool_save(pool=WarmPool(node=node, template=template, size=1,
                                            vm_sizes=[{"cpu_num": 1, "mem_mb": 128, "disk_mb": 0}]), by=olga)
    fill = Operation.objects.get(kind="warm_fill")
    assert fill.status == "failed" and fill.error_code == "start_vm"
    assert spares(pool) == []
    from tests.support import domain_names, tt_volumes

    assert not any(name.startswith("tt-local-test") for name in domain_names())
    assert not tt_volumes()


def test_the_site_s_pools_are_hidden_from_staff_lists_and_never_expire(pool, olga):
    assert not Env.objects.visible_to(olga).filter(pk=pool.env_id).exists()
    assert not Vm.objects.visible_to(olga).filter(env=pool.env).exists()
    with pytest.raises(IllegalState, match="switch the pool off instead"):
        env_destroy(env=pool.env, by=olga)
    from envs.services import env_expire_due

    assert env_expire_due(now=pool.env.end_at) == []


def test_the_api_says_how_each_vm_was_started(alice, pool, run_tasks):
    _op, (vm,) = create(alice, run_tasks)
    body = client_for(alice).get(f"/api/vms/{vm.pk}/").json()
    assert body["start_kind"] == "warm"
    _op, (cold,) = create(alice, run_tasks, name="e2", mem_mb=256)
    assert client_for(alice).get(f"/api/vms/{cold.pk}/").json()["start_kind"] == "cold"


def test_a_vm_added_to_a_stopped_env_keeps_the_spare_suspended(alice, pool, run_tasks):
    from envs.services import env_stop

    _op, (first,) = create(alice, run_tasks, mem_mb=256)
    env = first.env
    with run_tasks():
        stop = env_stop(env=env, by=alice)
    done(stop)
    Env.objects.filter(pk=env.pk).update(last_mgmt_at=None)  # past the cooldown
    with run_tasks():
        op = vm_add(env=env, by=alice, spec=NewVm(name="late", template="tt/busybox", mem_mb=128))
    done(op)
    vm = env.vms.get(name="late")
    assert vm.start_kind == "warm" and vm.status == Vm.Status.SUSPENDED
    assert "kept suspended" in op.log


def test_a_paused_pool_keeps_its_spares_in_memory_and_a_create_resumes_one(alice, node, template, olga,
                                                                           run_tasks):
    with run_tasks():
        pool = warm.pool_save(pool=WarmPool(node=node, template=template, size=1, keep="paused",
                                            vm_sizes=[{"cpu_num": 1, "mem_mb": 128, "disk_mb": 0}]), by=olga)
    (spare,) = spares(pool)
    dom = domain(spare)
    assert spare.status == Vm.Status.SUSPENDED and dom.isActive() and not dom.hasManagedSaveImage(0)
    assert "paused in memory" in Operation.objects.get(kind="warm_fill").log
    op, (vm,) = create(alice, run_tasks)
    assert vm.pk == spare.pk and vm.status == Vm.Status.RUNNING and vm.start_kind == "warm"
    assert "warm: resumed from a paused spare" in op.log
    import libvirt

    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    # A pool switched from paused to saved makes its paused spares stale.
    pool.keep = "saved"
    with run_tasks():
        warm.pool_save(pool=pool, by=olga)
    (saved,) = spares(pool)
    assert domain(saved).hasManagedSaveImage(0) and saved.warm_key == warm.warm_key_of(template, "saved")


# --- whatever dies under a fill or a warm create, no spare leaks -------------------------


class Killed(BaseException):
    """SIGKILL as the database and the engine see it: the worker stops dead, no roll-back."""


@pytest.fixture
def leases(settings):
    settings.TT_OPERATION_LEASE = 30
    settings.TT_OPERATION_MAX_ATTEMPTS = 2


def unfilled(node, template, olga, size=1) -> tuple[WarmPool, Operation]:
    """A pool whose fill is recorded, not run (its task is run by hand)."""
    pool = warm.pool_save(pool=WarmPool(node=node, template=template, size=size,
                                        vm_sizes=[{"cpu_num": 1, "mem_mb": 128, "disk_mb": 0}]), by=olga)
    warm.tend_pool(pool.pk)
    return pool, Operation.objects.get(kind="warm_fill")


def test_a_fill_whose_worker_died_before_the_save_is_finished_by_the_next(node, template, olga, leases,
                                                                          monkeypatch, time_machine):
    from datetime import timedelta

    from operations import runner
    from tests.support import T0

    real_save = LibvirtEngine.suspend_vm
    calls = []

    def die_at_first_save(self, spec):
        calls.append(spec.name)
        if len(calls) == 1:
            raise Killed
        return real_save(self, spec)

    monkeypatch.setattr(LibvirtEngine, "suspend_vm", die_at_first_save)
    pool, fill = unfilled(node, template, olga)
    with pytest.raises(Killed):
        runner.execute(fill.pk)
    (spare,) = spares(pool)
    assert spare.status == Vm.Status.SUSPENDING and domain(spare).isActive()
    time_machine.move_to(T0 + timedelta(seconds=31))
    runner.execute(fill.pk)
    assert (done(fill).status, fill.attempt) == ("succeeded", 2)
    spare.refresh_from_db()
    assert spare.status == Vm.Status.SUSPENDED and domain(spare).hasManagedSaveImage(0)


def test_a_fill_lost_every_attempt_leaves_nothing_once_tended(node, template, olga, leases, monkeypatch,
                                                              time_machine):
    from datetime import timedelta

    from operations import runner
    from tests.support import T0, domain_names, tt_volumes

    def die(self, spec, *, timeout):
        raise Killed

    monkeypatch.setattr(LibvirtEngine, "wait_booted", die)
    pool, fill = unfilled(node, template, olga)
    for attempt in (1, 2):
        time_machine.move_to(T0 + timedelta(seconds=40 * attempt))
        with pytest.raises(Killed):
            runner.execute(fill.pk)
    time_machine.move_to(T0 + timedelta(seconds=200))
    runner.execute(fill.pk)  # past the last attempt: settled, worker_lost
    assert (done(fill).status, fill.error_code) == ("failed", "worker_lost")
    (spare,) = spares(pool)
    assert spare.status == Vm.Status.RUNNING  # settled to what the node has: booted, never saved
    monkeypatch.undo()
    assert "discarding 1" in warm.tend_pool(pool.pk)
    discard = Operation.objects.get(kind="warm_discard")
    runner.execute(discard.pk)
    assert done(discard).status == "succeeded"
    spare.refresh_from_db()
    assert spare.status == Vm.Status.DESTROYED and spare.mac is None
    assert not any(n.startswith("tt-local-test") for n in domain_names()) and not tt_volumes()


def test_a_warm_create_whose_worker_died_after_the_restore_is_finished_by_the_next(
    alice, pool, leases, monkeypatch, time_machine
):
    from datetime import timedelta

    from operations import runner
    from tests.support import T0

    real_start = LibvirtEngine.start_vm
    calls = []

    def die_after_restore(self, spec):
        said = real_start(self, spec)
        calls.append(spec.name)
        if len(calls) == 1:
            raise Killed
        return said

    monkeypatch.setattr(LibvirtEngine, "start_vm", die_after_restore)
    op = env_create(owner=alice, by=alice, name="e1", vms=[NewVm(name="vm0", template="tt/busybox",
                                                                 mem_mb=128)])
    with pytest.raises(Killed):
        runner.execute(op.pk)
    vm = Env.objects.get(pk=op.env_id).vms.get()
    assert vm.status == Vm.Status.STARTING and vm.start_kind == "warm" and domain(vm).isActive()
    time_machine.move_to(T0 + timedelta(seconds=31))
    runner.execute(op.pk)
    assert done(op).status == "succeeded"
    vm.refresh_from_db()
    assert vm.status == Vm.Status.RUNNING and vm.start_kind == "warm"


@pytest.mark.parametrize("keep", ["saved", "paused"])
def test_reconciliation_finds_every_spare_where_it_should_be(node, template, olga, run_tasks, keep):
    from vms import reconcile

    with run_tasks():
        pool = warm.pool_save(pool=WarmPool(node=node, template=template, size=2, keep=keep,
                                            vm_sizes=[{"cpu_num": 1, "mem_mb": 128, "disk_mb": 0}]), by=olga)
    assert reconcile.reconcile_node(node.pk) == 0  # nothing to report or settle
    assert [s.status for s in spares(pool)] == [Vm.Status.SUSPENDED, Vm.Status.SUSPENDED]
    assert not Operation.objects.filter(kind="node_drift").exists()


def test_pools_are_changed_only_with_the_warm_pool_permissions(node, template, stan, db_state):
    from django.contrib.auth.models import Permission

    from ttportal.errors import Forbidden

    fresh = WarmPool(node=node, template=template, size=1,
                     vm_sizes=[{"cpu_num": 1, "mem_mb": 128, "disk_mb": 0}])
    with refused(db_state, Forbidden) as caught:  # staff alone
        warm.pool_save(pool=fresh, by=stan)
    assert "vms.change_warmpool" in caught.value.message
    assert not WarmPool.objects.exists()
    stan.user_permissions.add(Permission.objects.get(codename="delete_warmpool"))
    stan = type(stan).objects.get(pk=stan.pk)
    with refused(db_state, Forbidden):  # the permission of another verb
        warm.pool_save(pool=fresh, by=stan)
