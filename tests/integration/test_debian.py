"""Real guests: the Debian 12 template, booted on the real node, reached over SSH from the
client namespace through the VM's forwarded port, as a user would.

The template is built once per machine (about a minute) and cached after.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from accounts.services import ssh_key_add, ssh_key_delete
from envs.models import Env
from envs.services import env_create
from nodes.registry import get_engine
from tests.integration import netlab
from tests.integration.conftest import public_port, run
from tests.integration.test_egress import forged_dhcp_is_dropped_and_the_victim_keeps_its_address
from vms.models import Vm
from vms.new_vms import NewVm
from vms.services import snapshot_apply, snapshot_create, vm_add
from vms.template_install import DEBIAN_TEMPLATE

pytestmark = pytest.mark.django_db(transaction=True)


def user_key(tmp_path: Path, name: str) -> tuple[str, str]:
    """A key pair made as a user makes one: (private key file, public key line)."""
    private = tmp_path / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@laptop", "-f", str(private)],
        check=True,
    )
    return str(private), (tmp_path / f"{name}.pub").read_text()


def debian_vm(name: str, **kwargs) -> NewVm:
    return NewVm(name=name, template=DEBIAN_TEMPLATE, mem_mb=512, ports=[22], **kwargs)


def wait_for(probe, what: str, deadline_s: float = 120):
    """Poll `probe` until it answers something truthy; that answer."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        answer = probe()
        if answer:
            return answer
        time.sleep(1)
    raise AssertionError(f"no {what} in {deadline_s} s")


def ssh(vm: Vm, key: str, command: str, *, timeout: float = 30) -> subprocess.CompletedProcess:
    return netlab.client_ssh(vm.node.public_host, public_port(vm, 22), key, command, timeout=timeout)


def test_a_debian_vm_lets_its_owner_in_with_their_key(qnode, debian, alice, run_tasks, tmp_path):
    first_key, first_line = user_key(tmp_path, "first")
    first = ssh_key_add(user=alice, public_key=first_line)
    # A disk larger than the template's: cloud-init grows the root filesystem to it.
    op = run(env_create, run_tasks, owner=alice, by=alice, name="deb", vms=[debian_vm("web", disk_mb=3072)])
    env = Env.objects.get(pk=op.env_id)
    web = env.vms.get()
    netlab.wait_for_ssh(qnode.public_host, public_port(web, 22), first_key)

    who = ssh(web, first_key, "hostname; id -un; sudo -n id -u")
    assert who.returncode == 0, who.stderr
    assert who.stdout.split() == ["web", "tt", "0"]
    # cloud-init ran every module without an error, and no unit failed.
    # `--wait` blocks until cloud-init ends: under TCG on a busy host its last modules may run
    # minutes after SSH first answers.
    status = ssh(web, first_key, "cloud-init status --wait --long; systemctl --failed --no-legend",
                 timeout=300)
    assert status.returncode == 0 and "status: done" in status.stdout, status.stdout + status.stderr
    assert "failed" not in status.stdout.split("detail:")[-1], status.stdout
    size_mb = int(ssh(web, first_key, "df -BM --output=size / | tail -n 1").stdout.strip().rstrip("M"))
    assert size_mb > 2048, f"the root filesystem was not grown: {size_mb} MiB"

    # Its guest agent reports the address its MAC implies.
    engine = get_engine(qnode)
    reported = wait_for(lambda: engine.guest_addresses(web.to_spec()), "the guest agent's addresses")
    assert (f"{web.ip}/16") in [address for _interface, address in reported]

    # A snapshot of the running VM is taken live, its filesystems frozen; applying it brings
    # the file back as it was (the VM is asked to stop through its agent, then booted again).
    assert ssh(web, first_key, "echo before > /var/tmp/state").returncode == 0
    taken = run(snapshot_create, run_tasks, vm=web, by=alice, name="before")
    assert "snapshot taken live: filesystems frozen by the guest agent, then thawed" in taken.log
    web.refresh_from_db()
    assert web.status == "running"
    assert ssh(web, first_key, "echo after > /var/tmp/state && cat /var/tmp/state").stdout == "after\n"
    applied = run(snapshot_apply, run_tasks, snapshot=web.snapshots.get(name="before"), by=alice)
    assert "VM shut down when asked through the guest agent" in applied.log
    netlab.wait_for_ssh(qnode.public_host, public_port(web, 22), first_key)
    assert ssh(web, first_key, "cat /var/tmp/state").stdout == "before\n"

    # The owner's keys change: the next VM has the new one and not the deleted one.
    second_key, second_line = user_key(tmp_path, "second")
    ssh_key_add(user=alice, public_key=second_line)
    ssh_key_delete(key=first, by=alice)
    user_data = (
        "#cloud-config\n"
        "write_files:\n"
        "  - path: /var/tmp/from-user-data.txt\n"
        "    content: written by the VM's own cloud-config\n"
    )
    run(vm_add, run_tasks, env=env, spec=debian_vm("db", user_data=user_data), by=alice)
    db = env.vms.get(name="db")
    netlab.wait_for_ssh(qnode.public_host, public_port(db, 22), second_key)

    read = ssh(db, second_key, "hostname; cat /var/tmp/from-user-data.txt")
    assert read.returncode == 0, read.stderr
    assert read.stdout.splitlines() == ["db", "written by the VM's own cloud-config"]
    refused = ssh(db, first_key, "true")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr
    # The first VM keeps the key it was made with.
    assert ssh(web, first_key, "true").returncode == 0

    # A hostile guest's DHCP naming another VM's MAC (the tenant network boundary).
    forged_dhcp_is_dropped_and_the_victim_keeps_its_address(env, web, first_key, alice, run_tasks)
