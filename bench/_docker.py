"""The benchmarks' docker node (`benchd`): names, preparation and tear-down.

Its own bridge, VM network, ports and nft table, so it can run beside the
integration tests' docker node (`itest-d`) and a node the run command prepared.
"""

from __future__ import annotations

import contextlib
import io

import _common as c

SOCKET_URI = "unix:///run/podman/podman.sock"
NODE = dict(
    name="benchd", kind="docker", uri=SOCKET_URI, public_host=c.NODE_ADDR, vm_network="10.104.0.0/16",
    bridge="ttbr-benchd", network_name="tt-benchd-net", port_min=33000, port_max=33999,
)
NFT_TABLE = "tt_benchd"
CONTAINER_PREFIX = "tt-benchd-"
TEMPLATE = "tt/busybox-container"


def client():
    import docker

    return docker.DockerClient(base_url=SOCKET_URI, version="1.41")


def prepare_node():
    """The docker node, prepared as the run command prepares one, with the busybox image."""
    from django.core.management import call_command

    from nodes.models import Node
    from vms.models import VmTemplate

    opts = {k: v for k, v in NODE.items() if k != "name"}
    call_command("tt_prepare_node", NODE["name"], template=True, stdout=io.StringIO(), **opts)
    return Node.objects.get(name=NODE["name"]), VmTemplate.objects.get(name=TEMPLATE)


def remove_node() -> None:
    """Its containers, the image tags of its VMs, its network and its nft tables."""
    with contextlib.suppress(Exception):
        docker = client()
        for container in docker.containers.list(all=True):
            if container.name.startswith(CONTAINER_PREFIX) or container.name.startswith("tt-bench-bare-"):
                container.remove(force=True)
        with contextlib.suppress(Exception):
            docker.networks.get(NODE["network_name"]).remove()
    c.drop_nft_table(NFT_TABLE)
    with contextlib.suppress(Exception):
        from nodes.registry import forget_engines

        forget_engines()


def remove_vm_images(vm_ids: list[int]) -> None:
    """Snapshot and kept tags of the benchmark's VMs (`tt/vm-<id>:…`)."""
    docker = client()
    wanted = {f"tt/vm-{i}" for i in vm_ids}
    for image in docker.images.list():
        for tag in image.tags:
            if tag.rpartition(":")[0].removeprefix("docker.io/") in wanted:
                with contextlib.suppress(Exception):
                    docker.images.remove(tag)
