"""Warm pools on the real node: spares booted and saved by QEMU, restored by creates."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from engines.libvirt.engine import LibvirtEngine
from envs.models import Env
from envs.services import env_create
from tests.integration import netlab
from tests.integration.conftest import public_port, shell
from vms import warm
from vms.models import Vm, VmTemplate, WarmPool
from vms.new_vms import NewVm


@pytest.fixture(params=["saved"])
def pool(request, qnode, olga, run_tasks):
    """Two spares of the busybox template (1 vCPU, 128 MiB), booted, then saved (or paused,
    by the test's parameter)."""
    with run_tasks():
        made = warm.pool_save(pool=WarmPool(
            node=qnode, template=VmTemplate.objects.get(name="tt/busybox"), size=2, keep=request.param,
            vm_sizes=[{"cpu_num": 1, "mem_mb": 128, "disk_mb": 0}]), by=olga)
    assert ready(made) == 2, made.env.operations.values_list("kind", "status", "error_message", "log")
    return made


def ready(pool: WarmPool) -> int:
    return pool.spares.live().filter(status=Vm.Status.SUSPENDED).count()


def create(alice, run_tasks, name: str, n: int) -> tuple[object, list[Vm]]:
    with run_tasks():
        op = env_create(owner=alice, by=alice, name=name, vms=[
            NewVm(name=f"vm{i}", template="tt/busybox", mem_mb=128, ports=[80, 23]) for i in range(n)])
    op.refresh_from_db()
    assert op.status == "succeeded", f"{op.error_code}: {op.error_message}\n{op.log}"
    return op, list(Env.objects.get(pk=op.env_id).vms.order_by("name"))


@pytest.mark.parametrize("pool", ["saved", "paused"], indirect=True)
def test_warm_vms_serve_at_their_own_address_share_no_identity_and_the_pool_refills(
    pool, qnode, alice, run_tasks
):
    keep = pool.keep
    spare_ids = set(pool.spares.live().values_list("pk", flat=True))
    op, vms = create(alice, run_tasks, "warm", 2)
    for vm in vms:
        # Its page says the address its row shows, through its own forwarded port.
        netlab.wait_for_http(f"http://{qnode.public_host}:{public_port(vm, 80)}/", expect=f"ip {vm.ip}<")
    print(f"warm: the create ran {(op.finished_at - op.started_at).total_seconds():.2f} s")
    assert {vm.pk for vm in vms} == spare_ids and all(vm.start_kind == "warm" for vm in vms)
    # The log states each VM's restore and how long it took. (Issue 27's 0.5 s per restore is
    # not asserted: libvirt 9.0's guest-CPU fetch alone takes 0.1-0.3 s of it, whatever the
    # domain XML, docs/benchmarks.md#saved-restores: 0.40 and 0.52 s at load 1.2, 0.36 and 0.53 at 2.4.)
    verb = "resumed" if keep == "paused" else "restored"
    restores = [float(s) for s in re.findall(rf"warm: {verb} from a {keep} spare in ([\d.]+) s", op.log)]
    assert len(restores) == 2, op.log
    print(f"warm: restores {restores} s")
    identity = {}
    for vm in vms:
        netlab.wait_for_shell(qnode.public_host, public_port(vm, 23))
        mac = shell(vm, "cat /sys/class/net/eth0/address").strip()
        ip = shell(vm, "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1").strip()
        boot_id = shell(vm, "cat /proc/sys/kernel/random/boot_id").strip()
        assert (mac, ip) == (vm.mac, vm.ip)
        identity[vm.name] = (mac, ip, boot_id)
        # The guest's clock was saved with the spare; it follows the host's after the restore.
        skew = abs(int(shell(vm, "date +%s").strip()) - time.time())
        assert skew < 3, f"{vm.name}'s clock is {skew:.0f} s off the host's"
    macs, ips, boots = zip(*identity.values(), strict=True)
    assert len(set(macs)) == len(set(ips)) == len(set(boots)) == 2, identity
    # The creates' tend refilled the pool with new spares.
    assert ready(pool) == 2
    assert not spare_ids & set(pool.spares.live().values_list("pk", flat=True))


def test_a_spare_whose_saved_memory_is_corrupt_boots_cold(pool, qnode, alice, run_tasks):
    for spare in pool.spares.live():
        saved = Path(LibvirtEngine.SAVE_DIR) / f"{spare.engine_name}.save"
        data = bytearray(saved.read_bytes())
        data[len(data) // 2: len(data) // 2 + 4096] = b"\xff" * 4096  # QEMU's device state, mangled
        data[:64] = b"\0" * 64  # and libvirt's header
        saved.write_bytes(bytes(data))
    op, (vm,) = create(alice, run_tasks, "fallback", 1)
    assert vm.start_kind == "cold" and vm.status == Vm.Status.RUNNING
    assert "warm spare did not restore" in op.log and "cold: booted from the template" in op.log
    netlab.wait_for_http(f"http://{qnode.public_host}:{public_port(vm, 80)}/", expect=f"ip {vm.ip}<")
