"""The fake firecracker itself: it must refuse what Firecracker refuses (a body the official
spec rejects, a call out of the documented order) and answer as the spec says, or the driver's
tests would prove nothing. Spoken to here with raw HTTP, not through the driver."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engines.firecracker.support import KERNEL_FILE, TEMPLATE_FILE, FakeHost


class Raw:
    """HTTP on a unix socket, bodies sent as given (no schema in between)."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, method: str, url: str, body: object = None) -> tuple[int, dict | None]:
        conn = http.client.HTTPConnection("localhost", timeout=5)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.path))
        conn.sock = sock
        try:
            payload = None if body is None else json.dumps(body).encode()
            conn.request(method, url, body=payload, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        return response.status, (json.loads(data) if data else None)


def start_fake(host: FakeHost, name: str) -> tuple[Raw, subprocess.Popen]:
    """A fake firecracker on its own socket, once it answers (polled)."""
    sock = host.root / f"{name}.sock"
    child = subprocess.Popen([host.firecracker, "--id", name, "--api-sock", str(sock)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    raw = Raw(sock)
    deadline = time.monotonic() + 10
    while True:
        try:
            raw("GET", "/")
            return raw, child
        except OSError:
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline, "the fake never answered"
            time.sleep(0.01)


@pytest.fixture
def fake(fake_host: FakeHost) -> Iterator[tuple[Raw, subprocess.Popen]]:
    raw, child = start_fake(fake_host, "raw-1")
    yield raw, child
    child.kill()
    child.wait()


def configure(raw: Raw, pool: Path) -> None:
    assert raw("PUT", "/boot-source", {"kernel_image_path": str(pool / KERNEL_FILE)}) == (204, None)
    assert raw("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": str(pool / TEMPLATE_FILE),
                                          "is_root_device": True, "is_read_only": False}) == (204, None)


def test_it_answers_the_instance_info_the_spec_describes(fake):
    raw, _ = fake
    assert raw("GET", "/") == (200, {"app_name": "Firecracker", "id": "raw-1", "state": "Not started",
                                     "vmm_version": "1.16.1"})
    assert raw("GET", "/version") == (200, {"firecracker_version": "1.16.1"})


@pytest.mark.parametrize(("url", "body", "fault"), [
    ("/machine-config", {"vcpu_count": 2, "mem_size_mib": 128, "vcpus": 2},
     "Additional properties are not allowed ('vcpus' was unexpected)"),
    ("/machine-config", {"vcpu_count": 33, "mem_size_mib": 128},
     "vcpu_count: 33 is greater than the maximum of 32"),
    ("/machine-config", {"vcpu_count": 2}, "'mem_size_mib' is a required property"),
    ("/actions", {"action_type": "InstanceStop"}, "action_type: 'InstanceStop' is not one of"),
    ("/drives/rootfs", {"drive_id": "rootfs", "is_root_device": "true"},
     "is_root_device: 'true' is not of type 'boolean'"),
    ("/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "tap0", "mtu": 9},
     "mtu: 9 is less than the minimum of 68"),
    ("/nonsense", {}, "Invalid request method and/or path: PUT /nonsense."),
])
def test_it_refuses_a_body_or_path_the_spec_refuses(fake, url, body, fault):
    raw, _ = fake
    status, answer = raw("PUT", url, body)
    assert status == 400
    assert fault in answer["fault_message"]


def test_it_refuses_files_and_taps_that_are_not_there(fake, fake_host):
    raw, _ = fake
    status, answer = raw("PUT", "/boot-source", {"kernel_image_path": "/no/such/vmlinux"})
    assert status == 400 and "No such file" in answer["fault_message"]
    nic = {"iface_id": "eth0", "host_dev_name": "tapnothere"}
    status, answer = raw("PUT", "/network-interfaces/eth0", nic)
    assert status == 400 and "Open tap device failed: tapnothere" in answer["fault_message"]
    status, answer = raw("PUT", "/drives/a", {"drive_id": "b", "is_root_device": False})
    assert status == 400 and "does not match the id from the body" in answer["fault_message"]


def test_it_holds_the_documented_order(fake, fake_host):
    raw, child = fake
    status, answer = raw("PATCH", "/vm", {"state": "Paused"})
    before = "The requested operation is not supported before starting the microVM."
    assert (status, answer["fault_message"]) == (400, before)
    status, answer = raw("PUT", "/actions", {"action_type": "InstanceStart"})
    assert (status, answer["fault_message"]) == (400, "Cannot start microvm without kernel configuration.")
    configure(raw, fake_host.pool)
    status, answer = raw("PUT", "/snapshot/load", {"snapshot_path": "/s", "mem_file_path": "/m"})
    assert status == 400
    assert "not allowed after configuring boot-specific resources" in answer["fault_message"]
    assert raw("PUT", "/actions", {"action_type": "InstanceStart"}) == (204, None)
    assert raw("GET", "/")[1]["state"] == "Running"
    status, answer = raw("PUT", "/actions", {"action_type": "InstanceStart"})
    assert status == 400 and "not supported after starting the microVM" in answer["fault_message"]
    status, answer = raw("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64})
    assert status == 400 and "not supported after starting the microVM" in answer["fault_message"]
    snapshot = {"snapshot_path": str(fake_host.root / "s"), "mem_file_path": str(fake_host.root / "m")}
    status, answer = raw("PUT", "/snapshot/create", snapshot)
    assert status == 400 and "must be paused" in answer["fault_message"]
    assert raw("PATCH", "/vm", {"state": "Paused"}) == (204, None)
    assert raw("PUT", "/snapshot/create", {**snapshot, "snapshot_type": "Full"}) == (204, None)
    assert (fake_host.root / "m").stat().st_size == 128 * 1024 * 1024  # the default machine's memory
    assert raw("PATCH", "/vm", {"state": "Resumed"}) == (204, None)
    assert raw("PUT", "/actions", {"action_type": "SendCtrlAltDel"}) == (204, None)
    assert child.wait(timeout=5) == 0  # the guest rebooted: the process ends


def test_it_loads_a_snapshot_only_as_the_first_call_and_checks_what_it_names(fake_host, fake):
    raw, _ = fake
    configure(raw, fake_host.pool)
    raw("PUT", "/actions", {"action_type": "InstanceStart"})
    raw("PATCH", "/vm", {"state": "Paused"})
    state, mem = fake_host.root / "vm.state", fake_host.root / "vm.mem"
    raw("PUT", "/snapshot/create", {"snapshot_path": str(state), "mem_file_path": str(mem)})

    other, second = start_fake(fake_host, "raw-2")
    try:
        status, answer = other("PUT", "/snapshot/load", {
            "snapshot_path": str(state), "mem_backend": {"backend_type": "File", "backend_path": str(mem)},
            "mem_file_path": str(mem),
        })
        assert status == 400 and "Exactly one of mem_file_path and mem_backend" in answer["fault_message"]
        assert second.wait(timeout=5) == 0  # a failed load ends the process, as Firecracker's does
    finally:
        second.kill()
    entries = [e for e in fake_host.calls() if e["id"] == "raw-2"]
    assert [(e["path"], e["status"]) for e in entries] == [("/", 200), ("/snapshot/load", 400)]
