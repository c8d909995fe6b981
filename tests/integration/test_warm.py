"""Warm pools on the real node: spares booted and saved by QEMU, restored by creates."""

from __future__ import annotations

import os
import re
import select
import signal
import time
from pathlib import Path

import pytest

from engines.libvirt import parking
from engines.libvirt.engine import LibvirtEngine
from envs.models import Env
from envs.services import env_create
from nodes.registry import get_engine
from tests.integration import netlab
from tests.integration.conftest import public_port, shell
from vms import reconcile, warm
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
    if made.keep == "saved":
        # Each saved spare's restore is parked: its QEMU launched ahead, waiting for its memory.
        assert wait_parked(made, [s.engine_name for s in made.spares.live()]), parked_states(made)
    return made


def parked_states(pool: WarmPool) -> dict[str, str]:
    engine = get_engine(pool.node)
    return {s.engine_name: engine.park_state(s.engine_name) for s in pool.spares.live()}


def wait_parked(pool: WarmPool, names: list[str], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = parked_states(pool)
        if all(states.get(name, "").startswith("parked") for name in names):
            return True
        time.sleep(0.05)
    return False


def holder_processes(pool: WarmPool) -> dict[str, list[int]]:
    """Each spare's holder and QEMU pids that run."""
    engine = get_engine(pool.node)
    found = {}
    for spare in pool.spares.all():
        paths = parking.Paths(engine.park_dir, spare.engine_name)
        pids = [parking.holder_pid(paths), parking.qemu_pid(spare.engine_name)]
        found[spare.engine_name] = [pid for pid in pids if pid is not None and Path(f"/proc/{pid}").exists()]
    return found


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
    # The log states each VM's restore and how long it took: under half a second (issue 27),
    # a saved spare's QEMU launched ahead (engines/libvirt/parking.py).
    verb = "resumed" if keep == "paused" else "restored"
    restores = [float(s) for s in re.findall(rf"warm: {verb} from a {keep} spare in ([\d.]+) s", op.log)]
    assert len(restores) == 2, op.log
    print(f"warm: restores {restores} s")
    assert all(s < 0.5 for s in restores), (restores, os.getloadavg())
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


def test_parked_spares_leave_no_holder_pipe_or_qemu_once_discarded(pool, qnode, olga, run_tasks):
    running = holder_processes(pool)
    assert all(len(pids) == 2 for pids in running.values()), running  # a holder and a QEMU each
    pool.enabled = False
    with run_tasks():
        warm.pool_save(pool=pool, by=olga)
    assert not pool.spares.live().exists()
    deadline = time.monotonic() + 10
    while any(holder_processes(pool).values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(holder_processes(pool).values()), holder_processes(pool)
    engine = get_engine(qnode)
    assert not {n for n in parking.names(engine.park_dir) if n in running}


def test_a_spare_whose_holder_was_killed_is_parked_again_and_restores(pool, qnode, alice, run_tasks):
    engine = get_engine(qnode)
    victim = pool.spares.live().order_by("pk").first()
    os.kill(parking.holder_pid(parking.Paths(engine.park_dir, victim.engine_name)), signal.SIGKILL)
    # Its QEMU loses its stream: libvirt's restore fails and the domain is saved, not running.
    deadline = time.monotonic() + 30
    while engine.conn.lookupByName(victim.engine_name).isActive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine.is_parked(victim.engine_name)
    reconcile.reconcile_node(qnode.pk)  # the pass tidies what the holder left and parks it again
    assert wait_parked(pool, [victim.engine_name]), parked_states(pool)
    op, vms = create(alice, run_tasks, "reparked", 2)
    assert all(vm.start_kind == "warm" for vm in vms), op.log
    for vm in vms:
        netlab.wait_for_http(f"http://{qnode.public_host}:{public_port(vm, 80)}/", expect=f"ip {vm.ip}<")


def test_a_claim_whose_worker_was_killed_mid_feed_restores_from_the_saved_image(
    pool, qnode, alice, run_tasks, caplog
):
    engine = get_engine(qnode)
    victim = pool.spares.live().order_by("pk").first().engine_name
    paths = parking.Paths(engine.park_dir, victim)
    parked_qemu = parking.qemu_pid(victim)
    assert parked_qemu is not None and holder_processes(pool)[victim], parked_states(pool)
    saved = engine.save_path(victim)
    memory = os.path.getsize(saved) - parking.stream_offset(saved) - parking.LEAD
    half = memory // 2  # a busybox guest's saved memory is a few MiB
    told_r, told_w = os.pipe()
    child = os.fork()
    if child == 0:  # the worker: no database, no libvirt, only the claim's feed
        try:
            os.close(told_r)
            real_sendfile, fed = os.sendfile, [0]

            def slow_sendfile(out_fd, in_fd, offset, count):
                # The whole image goes into the pipe in a fraction of a second, too fast for a
                # kill to land in it reliably: here the feed sends 64 KiB at a time and, once
                # half of it went in, says so and stalls, so the kill always lands mid-feed.
                if fed[0] >= half:
                    os.write(told_w, b"!")
                    time.sleep(3600)
                sent = real_sendfile(out_fd, in_fd, offset, min(count, 64 << 10))
                fed[0] += sent
                return sent

            os.sendfile = slow_sendfile
            parking.feed(paths, saved)
            os.write(told_w, b"the whole image went in")
        except BaseException as exc:
            os.write(told_w, repr(exc).encode())
        finally:
            os._exit(1)
    os.close(told_w)
    try:
        ready_to_kill, _, _ = select.select([told_r], [], [], 30)
        assert ready_to_kill, "the worker's feed never got half of the memory in"
        assert os.read(told_r, 4096) == b"!", "the worker's feed failed"
        assert paths.claimed.exists()
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(told_r)
    # The killed worker's claim is cut short: its QEMU has part of its memory and waits for
    # the rest (the holder keeps the pipe open), its holder still runs.
    assert engine.is_parked(victim) and parking.qemu_pid(victim) == parked_qemu

    # The operation, recovered, creates an Env taking both spares.
    with caplog.at_level("INFO", logger="engines.libvirt.engine"):
        op, vms = create(alice, run_tasks, "killedclaim", 2)
    restores = re.findall(r"warm: restored from a saved spare in ([\d.]+) s", op.log)
    ran = (op.finished_at - op.started_at).total_seconds()
    print(f"killed claim: killed after {half} of {memory} bytes; create {ran:.2f} s, restores {restores} s")
    for vm in vms:
        netlab.wait_for_http(f"http://{qnode.public_host}:{public_port(vm, 80)}/", expect=f"ip {vm.ip}<")
    # Both restored warm: the killed claim's VM from its saved image (the claim is refused,
    # "claimed already", the parked QEMU destroyed, the plain restore follows), the other parked.
    assert all(vm.start_kind == "warm" and vm.status == Vm.Status.RUNNING for vm in vms), op.log
    assert len(re.findall(r"warm: restored from a saved spare in", op.log)) == 2, op.log
    assert "did not restore" not in op.log and "cold:" not in op.log, op.log
    said = caplog.text
    refused = f"{victim}: the parked restore failed ({victim}: claimed already); restoring from its saved"
    assert refused in said, said
    assert len(re.findall(r": parked restore: memory fed in", said)) == 1, said
    assert victim in {vm.engine_name for vm in vms}
    assert not engine.conn.lookupByName(victim).hasManagedSaveImage(0)  # never restored twice
    # Nothing of the killed claim is left: its holder, its parked QEMU, its pipe and files.
    assert parking.holder_pid(paths) is None and not Path(f"/proc/{parked_qemu}").exists()
    assert parking.qemu_pid(victim) != parked_qemu
    spares = {s.engine_name for s in pool.spares.live()}
    assert ready(pool) == 2 and victim not in spares
    assert parking.names(engine.park_dir) <= spares, parking.names(engine.park_dir)
    assert all(len(pids) == 2 for name, pids in holder_processes(pool).items() if name in spares)
    # No domain beyond the Env's VMs and the pool's live spares.
    domains = {d.name() for d in engine.conn.listAllDomains() if d.name().startswith(f"tt-{qnode.name}-")}
    assert domains == {vm.engine_name for vm in vms} | spares, domains
