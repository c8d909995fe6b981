"""Cloning a running Debian Env on the real node: the clones hold what the source's disk held at
the clone and nothing written after, each with its own MAC, IP and machine id; and the disk
bases go once the source and then its clones are destroyed.

One source boot and two clones booted side by side: a boot costs about a minute under TCG.
"""

from __future__ import annotations

import pytest

from engines.guest_io import ExecRequest
from envs import cloning
from envs.models import Env
from envs.services import env_create, env_destroy
from nodes.registry import get_engine
from tests.integration.conftest import run
from tests.integration.test_debian import debian_vm, wait_for
from vms.models import DiskBase

pytestmark = pytest.mark.django_db(transaction=True)


def test_clones_of_a_running_debian_env(qnode, debian, alice, run_tasks):
    engine = get_engine(qnode)
    op = run(env_create, run_tasks, owner=alice, by=alice, name="src", vms=[debian_vm("web")])
    source = Env.objects.get(pk=op.env_id)

    def sh(vm, command: str) -> str:
        result = engine.exec(vm.to_spec(), ExecRequest(argv=("sh", "-c", command)))
        assert result.exit_code == 0, result
        return result.stdout.decode().strip()

    def agent_up(vm):
        wait_for(lambda: engine.guest_addresses(vm.to_spec()), f"answer from the agent of {vm}", 420)

    web = source.vms.get()
    agent_up(web)
    sh(web, "echo before > /var/tmp/before")  # not synced: the fsfreeze must flush it
    source_machine_id = sh(web, "cat /etc/machine-id")

    op = run(cloning.env_clone, run_tasks, env=source, by=alice, count=2)
    assert "filesystems frozen by the guest agent" in op.log, op.log
    web.refresh_from_db()
    assert web.status == "running"
    sh(web, "echo after > /var/tmp/after")  # the source runs on, and writes on its own

    clones = [Env.objects.get(pk=pk).vms.get() for pk in op.params["envs"]]
    seen = {"mac": {web.mac}, "ip": {web.ip}, "machine-id": {source_machine_id}}
    for vm in clones:
        agent_up(vm)
        assert sh(vm, "cat /var/tmp/before") == "before"
        assert sh(vm, "test -e /var/tmp/after && echo there || echo absent") == "absent"
        machine_id = sh(vm, "cat /etc/machine-id")
        # The guest sees its own address, the one its MAC is given.
        addresses = [address for _, address in engine.guest_addresses(vm.to_spec())]
        assert any(address.startswith(f"{vm.ip}/") for address in addresses), addresses
        for key, value in (("mac", vm.mac), ("ip", vm.ip), ("machine-id", machine_id)):
            assert value not in seen[key], f"{vm}: {key} {value} is not its own"
            seen[key].add(value)
    assert sh(web, "cat /var/tmp/after") == "after"

    bases = [base.volume for base in DiskBase.objects.all()]
    assert bases
    run(env_destroy, run_tasks, env=source, by=alice)  # the source first: its base stays for the clones
    assert all(engine._volume(name) is not None for name in bases)
    assert sh(clones[0], "cat /var/tmp/before") == "before"
    for vm in clones:
        run(env_destroy, run_tasks, env=vm.env, by=alice)
    assert not DiskBase.objects.exists()
    engine._pool().refresh(0)
    left = [v.name() for v in engine._pool().listAllVolumes() if v.name().startswith(f"tt-{qnode.name}-")]
    assert left == [], left
