"""A container cannot fill its node's disk: it writes at most its disk_mb. Where the storage
driver can limit a writable layer (overlay over xfs with project quotas, btrfs, zfs) the
write itself fails; elsewhere (overlay over ext4, as here) the disk watchdog stops the
container, and its operation says why."""

from __future__ import annotations

import docker

from envs.models import Env
from envs.services import env_create
from nodes.registry import get_engine
from tests.integration import netlab
from tests.integration.conftest import DOCKER_NODE, public_port, shell
from vms import disk_watch
from vms.models import Vm
from vms.new_vms import NewVm

DISK_MB = 16


def container_status(vm: Vm) -> str:
    client = docker.DockerClient(base_url=DOCKER_NODE["uri"], version="1.41")
    return client.containers.get(vm.engine_name).status


def write_mb(vm: Vm, mb: int) -> str:
    return shell(vm, f"dd if=/dev/zero of=/fill-{mb} bs=1M count={mb} 2>&1; sync; echo rc=$?")


def test_a_container_writing_past_its_disk_is_stopped_or_limited(dnode, alice, run_tasks):
    with run_tasks():
        op = env_create(owner=alice, by=alice, name="disk", vms=[
            NewVm(name="box", template="tt/busybox-container", mem_mb=32, disk_mb=DISK_MB, ports=[80, 23])])
    op.refresh_from_db()
    assert op.status == "succeeded", f"{op.error_code}: {op.error_message}\n{op.log}"
    vm = Env.objects.get(pk=op.env_id).vms.select_related("node").get()
    assert vm.disk_mb == DISK_MB
    netlab.wait_for_shell(dnode.public_host, public_port(vm, 23))

    # Within its disk: nothing happens.
    assert write_mb(vm, 4).endswith("rc=0")
    with run_tasks():
        assert disk_watch.watch_node(dnode.pk) == []
    assert container_status(vm) == "running"

    said = write_mb(vm, DISK_MB + 4)
    if get_engine(dnode).limits_layers:  # the storage driver limits the layer: the write fails
        assert "No space left on device" in said
        return
    # No limit here: the write went through, and the watchdog's next pass stops it.
    assert said.endswith("rc=0")
    with run_tasks():
        (stop,) = disk_watch.watch_node(dnode.pk)
    stop.refresh_from_db()
    assert (stop.kind, stop.status, stop.error_code) == ("vm_disk_stop", "failed", "disk_exceeded")
    assert f"past its disk of {DISK_MB} MiB: stopping it" in stop.log
    assert f"VM box was stopped: it wrote {stop.params['used_mb']} MiB" in stop.error_message
    assert stop.params["used_mb"] > DISK_MB + 4 - 1
    vm.refresh_from_db()
    assert vm.status == "stopped"
    assert container_status(vm) == "exited"
