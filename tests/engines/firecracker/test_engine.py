"""The Firecracker driver against the fake firecracker: every call it makes is checked by the
fake against Firecracker's official API contract and call order, and recorded, so these tests
assert what Firecracker would have been asked, in which order, and what the node holds after.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from engines.cloudinit import CloudInitSpec
from engines.errors import EngineError, ErrorCode
from engines.firecracker import process, schemas
from engines.firecracker.api import FirecrackerApi, FirecrackerApiError
from engines.firecracker.engine import FirecrackerEngine
from engines.network.firewall import elements_of
from engines.specs import Feature, PowerState, SnapshotSpec
from tests.engines.firecracker.support import (
    BRIDGE,
    FakeHost,
    fake_is_running,
    leftovers,
    make_engine,
    make_vm,
    shape,
)

MIB = 1024 * 1024


def last_pid(host: FakeHost) -> int:
    return host.pids()[-1]


def running_pid(engine: FirecrackerEngine, name: str) -> int:
    return json.loads(engine.layout.process_record(name).read_text())["pid"]


def test_it_runs_a_vm_through_its_whole_life(engine, fake_host, template):
    vm = make_vm(template)
    image = engine.create_vm(vm)
    vm = vm.replace(runtime_image=image)
    assert Path(image) == fake_host.pool / "tt-fcunit-1.ext4"
    assert os.path.getsize(image) == 8 * MIB  # grown to disk_mb
    assert Path(image).read_bytes().startswith(b"a tiny ext4 root")
    assert engine.power_state(vm) == PowerState.STOPPED

    engine.start_vm(vm)
    assert engine.power_state(vm) == PowerState.RUNNING
    first = last_pid(fake_host)
    socket = str(engine.layout.state_dir(vm.name) / "api.sock")
    assert fake_host.started(first)["argv"] == ["--id", vm.name, "--api-sock", socket]
    calls = fake_host.calls(first)
    assert shape(calls) == [
        "GET /", "PUT /boot-source", "PUT /drives/rootfs", "PUT /machine-config",
        "PUT /network-interfaces/eth0", "PUT /actions InstanceStart",
    ]
    assert all(c["status"] in (200, 204) for c in calls)
    boot, drive, machine, nic = (c["body"] for c in calls[1:5])
    assert boot == {
        "kernel_image_path": str(fake_host.pool / "vmlinux-tiny"),
        "boot_args": "console=ttyS0 reboot=k panic=1 pci=off ip=10.200.2.1::10.200.0.1:255.255.0.0::eth0:off",
    }
    assert drive == {"drive_id": "rootfs", "path_on_host": image, "is_root_device": True,
                     "is_read_only": False}
    assert machine == {"vcpu_count": 2, "mem_size_mib": 128}
    assert nic == {"iface_id": "eth0", "host_dev_name": vm.tap, "guest_mac": "52:54:00:00:02:01"}
    assert engine.hostnet.links == {BRIDGE, vm.tap}

    # A live snapshot: paused, Full snapshot, disk copied, resumed; the same process goes on.
    live = engine.storage_snapshot_live(vm, "live")
    assert shape(fake_host.calls(first)[6:]) == [
        "PATCH /vm Paused", "PUT /snapshot/create", "PATCH /vm Resumed",
    ]
    create = fake_host.calls(first)[7]["body"]
    assert create == {"snapshot_type": "Full", "snapshot_path": f"{live}.partial/vm.state",
                      "mem_file_path": f"{live}.partial/vm.mem"}
    assert sorted(os.listdir(live)) == ["disk.ext4", "snapshot.json", "vm.mem", "vm.state"]
    assert os.path.getsize(Path(live) / "vm.mem") == 128 * MIB
    assert engine.power_state(vm) == PowerState.RUNNING and running_pid(engine, vm.name) == first

    assert engine.stop_vm(vm) == "shut down when sent Ctrl+Alt+Del"
    assert shape(fake_host.calls(first))[-1] == "PUT /actions SendCtrlAltDel"
    assert not fake_is_running(first)
    assert engine.power_state(vm) == PowerState.STOPPED
    assert engine.hostnet.links == {BRIDGE}  # the tap went with the process
    assert engine.stop_vm(vm) == "already stopped"

    # A stopped VM's snapshot is its disk.
    cold = engine.storage_create_snapshot(vm, "cold")
    assert sorted(os.listdir(cold)) == ["disk.ext4", "snapshot.json"]

    # The guest wrote to its disk since; applying the live snapshot brings back its disk...
    with open(image, "r+b") as disk:
        disk.write(b"written after the snapshots")
    engine.storage_apply_snapshot(vm, SnapshotSpec(name="live", path=live))
    assert Path(image).read_bytes() == (Path(live) / "disk.ext4").read_bytes()
    assert engine.power_state(vm) == PowerState.STOPPED  # stopped when applied: it stays so

    # ...and its next start resumes the snapshot's memory: snapshot/load is the first call.
    engine.start_vm(vm)
    second = last_pid(fake_host)
    assert second != first
    assert shape(fake_host.calls(second)) == ["GET /", "PUT /snapshot/load"]
    load = fake_host.calls(second)[1]["body"]
    restore = engine.layout.restore_dir(vm.name)
    assert load == {
        "snapshot_path": str(restore / "vm.state"),
        "mem_backend": {"backend_type": "File", "backend_path": str(restore / "vm.mem")},
        "network_overrides": [{"iface_id": "eth0", "host_dev_name": vm.tap}],
        "resume_vm": True,
    }
    assert engine.power_state(vm) == PowerState.RUNNING

    # Resumed once: the start after the next stop boots.
    assert engine.stop_vm(vm) == "shut down when sent Ctrl+Alt+Del"
    assert not restore.exists()
    engine.start_vm(vm)
    assert shape(fake_host.calls(last_pid(fake_host)))[-1] == "PUT /actions InstanceStart"
    engine.stop_vm(vm)

    # The disk-only snapshot applied: its disk, and a boot.
    engine.storage_apply_snapshot(vm, SnapshotSpec(name="cold", path=cold))
    engine.start_vm(vm)
    assert shape(fake_host.calls(last_pid(fake_host)))[-1] == "PUT /actions InstanceStart"

    assert "Traceback" not in engine.console_log(vm.name, 1_000_000)  # the fake never broke down
    engine.storage_destroy_snapshot(vm, SnapshotSpec(name="cold", path=cold))
    assert not Path(cold).exists()
    engine.destroy_vm(vm)
    assert engine.power_state(vm) == PowerState.MISSING
    assert not any(fake_is_running(pid) for pid in fake_host.pids())
    assert engine.hostnet.links == {BRIDGE}
    assert leftovers(fake_host) == []
    assert engine.firewall.state.ports == set()
    assert not any(entry["status"] >= 400 for entry in fake_host.calls())


def test_it_snapshots_applies_and_destroys_through_the_base_flows(engine, fake_host, template):
    vm = make_vm(template)
    vm = vm.replace(runtime_image=engine.create_vm(vm))
    assert set(elements_of(vm)) <= set(engine.firewall.installed_for(vm))
    assert engine.firewall.state.port_map == {("tcp", 20001): ("10.200.2.1", 22)}
    assert engine.firewall.state.ports == {(vm.tap, vm.mac, vm.ip)}
    engine.start_vm(vm)
    booted = last_pid(fake_host)

    said: list[str] = []
    taken = engine.create_snapshot(vm, "s1", lambda _p, message: said.append(message))
    assert any("snapshot taken live" in m for m in said)
    assert (Path(taken.path) / "vm.mem").exists() and taken.meta["cpu_num"] == 2
    assert running_pid(engine, vm.name) == booted  # never stopped

    said.clear()
    restored = engine.apply_snapshot(vm, SnapshotSpec(name="s1", path=taken.path, meta=taken.meta),
                                     lambda _p, message: said.append(message))
    assert restored.cpu_num == 2
    assert "VM shut down when sent Ctrl+Alt+Del" in said  # it ran: stopped, reverted, started again
    assert engine.power_state(vm) == PowerState.RUNNING
    assert shape(fake_host.calls(last_pid(fake_host))) == ["GET /", "PUT /snapshot/load"]

    engine.stop_vm(vm)
    stopped = engine.create_snapshot(vm, "s2")
    assert not (Path(stopped.path) / "vm.mem").exists()
    assert engine.power_state(vm) == PowerState.STOPPED  # left as it was
    engine.destroy_snapshot(vm, SnapshotSpec(name="s2", path=stopped.path))
    assert not Path(stopped.path).exists()

    engine.start_vm(vm)
    engine.destroy_vm(vm)  # running: forced off, then everything removed
    assert not any(fake_is_running(pid) for pid in fake_host.pids())
    assert engine.firewall.installed_for(vm) == []
    assert engine.hostnet.links == {BRIDGE}
    assert leftovers(fake_host) == []


def test_it_keeps_the_image_when_asked(engine, fake_host, template):
    vm = make_vm(template, keep_image=True)
    vm = vm.replace(runtime_image=engine.create_vm(vm))
    engine.destroy_vm(vm)
    assert leftovers(fake_host) == ["tt-fcunit-1.ext4"]


def test_it_forces_off_a_guest_that_ignores_ctrl_alt_del(fake_host, template, monkeypatch):
    monkeypatch.setenv("FAKE_FC_GUEST", "ignores-ctrl-alt-del")
    engine = make_engine(fake_host, stop_timeout=0.2)
    vm = make_vm(template)
    engine.create_vm(vm)
    engine.start_vm(vm)
    pid = last_pid(fake_host)
    assert engine.stop_vm(vm) == "forced off after 0.2 s (sent Ctrl+Alt+Del)"
    assert not fake_is_running(pid)
    assert engine.hostnet.links == {BRIDGE}
    engine.start_vm(vm)
    assert engine.stop_vm(vm, force=True) == "forced off"
    assert shape(fake_host.calls(last_pid(fake_host)))[-1] == "PUT /actions InstanceStart"  # nothing asked


def test_it_refuses_a_vm_the_contract_refuses_before_sending_anything(engine, fake_host, template):
    vm = make_vm(template, cpu_num=64)
    with pytest.raises(EngineError) as refused:
        engine.create_vm(vm)
    assert refused.value.code == ErrorCode.DEFINE_VM
    assert "vcpu_count: 64 is greater than the maximum of 32" in refused.value.message
    assert fake_host.pids() == []
    assert leftovers(fake_host) == []  # the image made before was rolled back


def test_it_raises_firecrackers_fault_for_a_body_the_spec_refuses(engine, fake_host, template, monkeypatch):
    # As if the project's schema had drifted from the contract: it lets 64 vCPUs through,
    # the fake (the official spec) refuses them, and the driver says so.
    monkeypatch.setitem(schemas._validators, "MachineConfiguration", schemas.Draft4Validator({}))
    vm = make_vm(template, cpu_num=64)
    engine.create_vm(vm)
    with pytest.raises(EngineError) as refused:
        engine.start_vm(vm)
    assert refused.value.code == ErrorCode.START_VM
    said = "PUT /machine-config answered 400: vcpu_count: 64 is greater than the maximum of 32"
    assert said in str(refused.value)
    assert isinstance(refused.value.__cause__, FirecrackerApiError)
    assert refused.value.__cause__.fault_message == "vcpu_count: 64 is greater than the maximum of 32"
    assert not fake_is_running(last_pid(fake_host))  # the half-configured process was ended
    assert engine.hostnet.links == {BRIDGE}
    assert engine.power_state(vm) == PowerState.STOPPED


def test_it_raises_firecrackers_fault_for_a_call_out_of_order(engine, fake_host, template, monkeypatch):
    vm = make_vm(template)
    engine.create_vm(vm)
    engine.start_vm(vm)
    pid = last_pid(fake_host)
    # As if the driver forgot to pause: Firecracker snapshots only a paused VM.
    monkeypatch.setattr(FirecrackerApi, "patch", lambda self, path, body, **params: None)
    with pytest.raises(EngineError) as refused:
        engine.storage_snapshot_live(vm, "unpaused")
    assert refused.value.code == ErrorCode.SNAPSHOT_CREATE
    assert "must be paused" in refused.value.message
    assert fake_host.calls(pid)[-1]["status"] == 400
    assert not engine.layout.snapshot_dir(vm.name, "unpaused").exists()  # nothing passes for a snapshot
    assert engine.power_state(vm) == PowerState.RUNNING


def test_it_tells_its_own_process_from_a_reused_pid(engine, fake_host, template):
    vm = make_vm(template)
    engine.create_vm(vm)
    engine.start_vm(vm)
    record_path = engine.layout.process_record(vm.name)
    record = json.loads(record_path.read_text())
    # The same pid, started at another time: not ours.
    record_path.write_text(json.dumps({**record, "start_ticks": record["start_ticks"] + 1}))
    assert engine.power_state(vm) == PowerState.STOPPED
    # A live process started at the recorded time but not this VM's firecracker: not ours either.
    me = process.launch(["sleep", "5"], vm_name="other", log_path=fake_host.root / "sleep.log",
                        cwd=fake_host.root)
    record_path.write_text(json.dumps({**record, "pid": me.pid, "start_ticks": me.start_ticks}))
    assert engine.power_state(vm) == PowerState.STOPPED
    os.kill(me.pid, 9)
    record_path.write_text(json.dumps(record))
    assert engine.power_state(vm) == PowerState.RUNNING
    engine.destroy_vm(vm)


def test_it_restarts_after_the_guest_powered_off_by_itself(engine, fake_host, template):
    vm = make_vm(template)
    engine.create_vm(vm)
    engine.start_vm(vm)
    pid = last_pid(fake_host)
    os.kill(pid, 9)  # the process ended without the driver (a guest reboot, a crash)
    assert process.wait_until_ended(process.ProcessRecord.from_json(
        json.loads(engine.layout.process_record(vm.name).read_text())), 5)
    assert engine.power_state(vm) == PowerState.STOPPED
    engine.start_vm(vm)  # its stale socket and tap are cleared first
    assert engine.power_state(vm) == PowerState.RUNNING
    assert shape(fake_host.calls(last_pid(fake_host)))[-1] == "PUT /actions InstanceStart"
    engine.destroy_vm(vm)


def test_it_attaches_the_cloud_init_seed_read_only(engine, fake_host, template):
    seed = CloudInitSpec(hostname="web", instance_id="tt-fcunit-3-1", ssh_keys=("ssh-ed25519 AAAA alice",))
    vm = make_vm(dataclasses.replace(template, cloud_init=True), 3, cloud_init=seed)
    engine.create_vm(vm)
    seed_image = fake_host.pool / "tt-fcunit-3-seed.img"
    assert seed_image.read_bytes()[0x2B:0x36] == b"CIDATA     "  # the FAT volume label NoCloud looks for
    engine.start_vm(vm)
    drives = [c["body"] for c in fake_host.calls(last_pid(fake_host)) if c["path"].startswith("/drives/")]
    assert drives[1] == {"drive_id": "seed", "path_on_host": str(seed_image), "is_root_device": False,
                         "is_read_only": True}
    engine.destroy_vm(vm)
    assert leftovers(fake_host) == []


def test_it_shows_the_serial_console(fake_host, template):
    console_dir = fake_host.root / "console"
    engine = make_engine(fake_host, console_dir=str(console_dir))
    vm = make_vm(template)
    engine.create_vm(vm)
    assert engine.console_log(vm.name) == ""
    engine.start_vm(vm)
    booted = "Kernel command line: console=ttyS0 reboot=k panic=1 pci=off ip=10.200.2.1::"
    assert booted in engine.console_log(vm.name)
    engine.stop_vm(vm)
    assert "reboot: Restarting system" in engine.console_log(vm.name)
    engine.destroy_vm(vm)
    assert list(console_dir.iterdir()) == []


def test_it_lists_what_the_node_holds_by_prefix(engine, fake_host, template):
    vm = make_vm(template)
    engine.create_vm(vm)
    (fake_host.pool / "tt-other-9.ext4").write_bytes(b"")
    found = engine.inventory("tt-fcunit-")
    assert found.instances == {"tt-fcunit-1"}
    assert found.images == {"tt-fcunit-1.ext4": "tt-fcunit-1"}
    assert found.reservations is None  # no DHCP: each guest is booted with its address
    engine.remove_image("tt-fcunit-1.ext4")
    engine.remove_instance("tt-fcunit-1")
    assert engine.inventory("tt-fcunit-").instances == frozenset()
    assert engine.inventory("tt-").images == {"tt-other-9.ext4": "tt-other-9"}


def test_it_sets_up_the_node_bridge_and_firewall_at_init(engine):
    assert engine.hostnet.commands[0] == ("ensure_bridge", BRIDGE, "10.200.0.1/16")
    assert engine.features == {
        Feature.SNAPSHOT, Feature.START_STOP, Feature.NAT, Feature.FLAT, Feature.KEEP_IMAGE,
        Feature.DISK_LIMIT,
    }
    assert engine.set_reservation("52:54:00:00:02:01", "10.200.2.1", "tt-fcunit-1", present=True) is None


def test_it_refuses_a_disk_smaller_than_the_template(engine, fake_host, template):
    with pytest.raises(EngineError) as refused:
        engine.create_vm(make_vm(template, disk_mb=1))
    assert refused.value.code == ErrorCode.STORAGE_CREATE_IMAGE
    assert "smaller than template" in refused.value.message
    assert leftovers(fake_host) == []


def test_it_says_plainly_when_the_binary_is_missing(fake_host, template):
    engine = make_engine(fake_host, binary=str(fake_host.root / "nowhere" / "firecracker"))
    vm = make_vm(template)
    engine.create_vm(vm)
    with pytest.raises(EngineError) as refused:
        engine.start_vm(vm)
    assert refused.value.code == ErrorCode.START_VM
    assert "firecracker binary" in refused.value.message and "not found" in refused.value.message
    assert engine.hostnet.links == {BRIDGE}


def test_it_carries_a_waiting_memory_snapshot_and_drops_it_on_resize(engine, fake_host, template):
    vm = make_vm(template)
    engine.create_vm(vm)
    engine.start_vm(vm)
    live = engine.storage_snapshot_live(vm, "live")
    engine.stop_vm(vm)
    engine.storage_apply_snapshot(vm, SnapshotSpec(name="live", path=live))
    # Snapshotted again before it ever started: this snapshot is the waiting memory too.
    again = engine.storage_create_snapshot(vm, "again")
    assert sorted(os.listdir(again)) == ["disk.ext4", "snapshot.json", "vm.mem", "vm.state"]
    engine.update_vm(vm)  # the same machine: the memory still waits
    assert engine.layout.restore_dir(vm.name).exists()
    engine.update_vm(vm.replace(mem_mb=256))  # it cannot resume in another machine: it will boot
    assert not engine.layout.restore_dir(vm.name).exists()
    engine.start_vm(vm)
    calls = fake_host.calls(last_pid(fake_host))
    assert shape(calls)[-1] == "PUT /actions InstanceStart"
    assert calls[-3]["body"] == {"vcpu_count": 2, "mem_size_mib": 256}
    engine.destroy_vm(vm)
    assert leftovers(fake_host) == []
