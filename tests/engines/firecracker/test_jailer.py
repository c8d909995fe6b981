"""The driver launching firecracker through the jailer (a fake one: see fake_jailer.py). What it
proves: the jailer's arguments, a fresh chroot for every run (the jailer fails on the devices
an earlier run left), the VM's files placed inside it (the runtime image hard-linked: the
guest writes the very same file), paths given as the jailed process sees them, snapshot files
written inside and moved out, and nothing left once the VM is gone. What it cannot prove: the
real jailer's chroot, privilege drop, cgroups and device nodes."""

from __future__ import annotations

import json
import os

import pytest

from engines.errors import EngineError, ErrorCode
from engines.specs import PowerState, SnapshotSpec
from tests.engines.firecracker.support import BRIDGE, fake_is_running, leftovers, make_engine, make_vm, shape


def test_it_runs_a_jailed_vm_through_its_whole_life(fake_host, template):
    engine = make_engine(fake_host, jailer=True)
    vm = make_vm(template)
    image = engine.create_vm(vm)
    engine.start_vm(vm)

    pid = fake_host.pids()[-1]
    root = fake_host.pool / "jail" / "firecracker" / vm.name / "root"
    started = fake_host.started(pid)
    assert started["root"] == str(root)
    argv = started["argv"]
    assert argv[:2] == ["--id", vm.name] and argv[2] == "--start-time-us"
    assert argv[-2:] == ["--api-sock", "/api.sock"]
    record = json.loads(engine.layout.process_record(vm.name).read_text())
    assert record["api_socket"] == str(root / "api.sock")
    boot, drive = (c["body"] for c in fake_host.calls(pid)[1:3])
    assert boot["kernel_image_path"] == "/vmlinux"
    assert drive["path_on_host"] == "/rootfs.ext4"
    assert os.path.samefile(root / "rootfs.ext4", image)  # the guest writes the runtime image itself
    assert (root / "firecracker").exists() and (root / "dev" / "kvm").exists()  # the jailer's own

    live = engine.storage_snapshot_live(vm, "live")
    create = fake_host.calls(pid)[-2]["body"]
    assert (create["snapshot_path"], create["mem_file_path"]) == ("/out/vm.state", "/out/vm.mem")
    assert sorted(os.listdir(live)) == ["disk.ext4", "snapshot.json", "vm.mem", "vm.state"]

    assert engine.stop_vm(vm) == "shut down when sent Ctrl+Alt+Del"
    assert not (fake_host.pool / "jail" / "firecracker" / vm.name).exists()  # the chroot went with it

    engine.storage_apply_snapshot(vm, SnapshotSpec(name="live", path=live))
    engine.start_vm(vm)  # a fresh chroot: the fake jailer fails on an old /dev/kvm
    second = fake_host.pids()[-1]
    assert shape(fake_host.calls(second)) == ["GET /", "PUT /snapshot/load"]
    load = fake_host.calls(second)[1]["body"]
    assert load["snapshot_path"] == "/snapshot.state"
    assert load["mem_backend"] == {"backend_type": "File", "backend_path": "/snapshot.mem"}
    assert engine.power_state(vm) == PowerState.RUNNING

    engine.destroy_vm(vm)
    assert not any(fake_is_running(p) for p in fake_host.pids())
    assert engine.hostnet.links == {BRIDGE}
    assert leftovers(fake_host) == ["jail/firecracker"]  # the binary's directory, empty
    assert list((fake_host.pool / "jail" / "firecracker").iterdir()) == []


def test_it_refuses_a_vm_name_the_jailer_would_not_take(fake_host, template):
    engine = make_engine(fake_host, jailer=True)
    vm = make_vm(template).replace(name="tt-my_node-1")
    engine.create_vm(vm)
    with pytest.raises(EngineError) as refused:
        engine.start_vm(vm)
    assert refused.value.code == ErrorCode.START_VM
    assert "letters, digits and hyphens" in refused.value.message
    assert fake_host.pids() == []
    engine.destroy_vm(vm)
