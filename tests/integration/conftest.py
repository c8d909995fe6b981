"""Real libvirt, real QEMU (TCG here), real nftables. These tests fail, never skip,
when a component is missing: preparing the node raises and says what is missing."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import libvirt
import pytest
from django.core.management import call_command

from engines.libvirt import debian_builder, dhcp
from engines.libvirt.connection import get_connection
from envs.models import Env
from envs.services import env_create
from nodes.models import Node
from nodes.registry import forget_engines, get_engine
from tests.integration import netlab
from vms.new_vms import NewVm
from vms.template_install import install_debian_template

NODE = dict(
    name="itest", uri="qemu:///system", public_host=netlab.NODE_ADDR, vm_network="10.101.0.0/16",
    bridge="ttbr-it", pool_name="tt-it-pool", network_name="tt-it-net", port_min=30000, port_max=30999,
)

# Snapshot metadata and a suspended VM's saved memory go with the domain.
UNDEFINE_ALL = libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def debian_image(request) -> Iterator[Future | None]:
    """The Debian image, building beside the first real-guest tests when a test of a Debian
    guest (one using the `debian` fixture) is to run: on a fresh machine it takes about 80 s
    (cached after), which would otherwise all come in front of them. Its future, for the
    `debian` fixture to wait on."""
    if not any("debian" in getattr(item, "fixturenames", ()) for item in request.session.items):
        yield None
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="debian-image") as pool:
        yield pool.submit(debian_builder.build)


@pytest.fixture
def debian(qnode, debian_image):
    """The Debian 12 template installed on the real node."""
    debian_image.result()  # built beside the earlier tests (debian_image); the cache after
    return install_debian_template(qnode)


@pytest.fixture(scope="session")
def client_ns():
    netlab.create_client()
    yield
    netlab.destroy_client()


def _clean_node(spec: dict = NODE) -> None:
    """Nothing of earlier tests on the libvirt node of `spec`: domains, volumes, DHCP entries."""
    conn = get_connection(spec["uri"])
    prefix = f"tt-{spec['name']}-"
    ours = [dom for dom in conn.listAllDomains() if dom.name().startswith(prefix)]
    # All at once: libvirt takes about 2 s to see each QEMU process end, and would take them
    # one after another (8 s after a test of four VMs).
    with ThreadPoolExecutor(max_workers=max(1, len(ours))) as pool:
        list(pool.map(_remove_domain, ours))
    try:
        pool = conn.storagePoolLookupByName(spec["pool_name"])
        pool.refresh(0)
        for vol in pool.listAllVolumes():
            if vol.name().startswith(prefix):
                vol.delete(0)
    except libvirt.libvirtError:
        pass
    try:  # DHCP entries of VMs from earlier tests (the test database starts empty each time)
        net = conn.networkLookupByName(spec["network_name"])
    except libvirt.libvirtError:
        return
    for mac in dhcp.reservations(net):
        dhcp.drop(net, mac)


def _remove_domain(dom: libvirt.virDomain) -> None:
    if dom.isActive():
        dom.destroy()
    dom.undefineFlags(UNDEFINE_ALL)


def _prepared(spec: dict, clean) -> Iterator[Node]:
    """A real node prepared exactly as the run command prepares one, with its busybox
    template, and nothing of earlier tests on it (before and after)."""
    # Prepare first: on a fresh machine it is what starts the engine's daemon.
    opts = {k: v for k, v in spec.items() if k != "name"}
    call_command("tt_prepare_node", spec["name"], template=True, **opts)
    clean()
    node = Node.objects.get(name=spec["name"])
    get_engine(node).firewall.rebuild([])
    yield node
    clean()
    get_engine(node).firewall.rebuild([])
    forget_engines()


@pytest.fixture
def lab_internet(settings):
    """The lab has no global address: the client namespace (198.18.0.0/29, a benchmarking
    range every node denies to VMs) stands in for the Internet, so its network is allowed,
    as an operator would allow an internal mirror (TT_VM_ALLOW_NETWORKS). Any other private
    network stays closed (tests/integration/test_egress.py)."""
    settings.TT_VM_ALLOW_NETWORKS = (ipaddress.ip_network(netlab.CLIENT.network),)


@pytest.fixture
def qnode(db, client_ns, lab_internet):
    """The real QEMU node."""
    yield from _prepared(NODE, _clean_node)


def booter(node: Node, alice, run_tasks, *, template: str, mem_mb: int, default_name: str):
    """Create an Env of VMs from `template` on `node` and wait until each answers HTTP."""

    def boot(name=default_name, vms=("web",), ports=(80, 23), **kwargs) -> Env:
        specs = [NewVm(name=v, template=template, mem_mb=mem_mb, ports=list(ports)) for v in vms]
        with run_tasks():
            op = env_create(owner=alice, by=alice, name=name, vms=specs, **kwargs)
        op.refresh_from_db()
        assert op.status == "succeeded", f"{op.error_code}: {op.error_message}\n{op.log}"
        env = Env.objects.get(pk=op.env_id)
        for vm in env.vms.all():
            netlab.wait_for_http(f"http://{node.public_host}:{public_port(vm, 80)}/", expect=vm.ip)
        return env

    return boot


@pytest.fixture
def boot_env(qnode, alice, run_tasks):
    """Create an Env of VMs from the busybox template and wait until each answers HTTP."""
    return booter(qnode, alice, run_tasks, template="tt/busybox", mem_mb=128, default_name="itest")


def public_port(vm, inner: int, protocol: str = "tcp") -> int:
    return vm.port_mappings.get(inner_port=inner, protocol=protocol).public_port


def run(service, run_tasks, **kwargs):
    """Call a service, run its task here, and check it succeeded; the operation."""
    with run_tasks():
        op = service(**kwargs)
    op.refresh_from_db()
    assert op.status == "succeeded", f"{op.error_code}: {op.error_message}\n{op.log}"
    return op


def shell(vm, command: str) -> str:
    """Run a command in the guest through its test shell (its forwarded port 23)."""
    return netlab.guest_run(vm.node.public_host, public_port(vm, 23), command)


DOCKER_NODE = dict(
    name="itest-d", kind="docker", uri="unix:///run/podman/podman.sock", public_host=netlab.NODE_ADDR,
    vm_network="10.103.0.0/16", bridge="ttbr-itd", network_name="tt-itd-net", port_min=31000, port_max=31999,
)


def _clean_docker_node() -> None:
    import docker

    client = docker.DockerClient(base_url=DOCKER_NODE["uri"], version="1.41")
    prefix = f"tt-{DOCKER_NODE['name']}-"
    for container in client.containers.list(all=True):
        if container.name.startswith(prefix):
            container.remove(force=True)
    for image in client.images.list():
        for tag in image.tags:
            if "/tt/vm-" in f"/{tag}":
                client.images.remove(tag)


@pytest.fixture
def dnode(db, client_ns, lab_internet):
    """A real docker node (podman's Docker API)."""
    yield from _prepared(DOCKER_NODE, _clean_docker_node)


@pytest.fixture
def boot_containers(dnode, alice, run_tasks):
    """Create an Env of containers from the busybox image and wait until each answers HTTP."""
    return booter(dnode, alice, run_tasks, template="tt/busybox-container", mem_mb=32, default_name="itest-d")
