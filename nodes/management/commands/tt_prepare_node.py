"""Prepare this host as a node of one engine kind and register it. Idempotent; the run and
test commands call it.

`--kind libvirt` (the default): starts virtlogd/libvirtd with the qemu.conf this host
needs, creates the VM network (bridge + per-MAC DHCP) and storage pool.
`--kind docker`: podman serving the Docker API on the node's socket (with runc and
the ulimits this host needs), and the node's bridge network.
`--kind firecracker`: refused, with the reason, on a host without working KVM or the
binary.

Then, for every kind: installs the node's nftables table and rebuilds every port
map, egress and blacklist entry from the database, and (with --template) installs
templates: `--template` alone the busybox one, `--template debian` the Debian 12 one
(QEMU only: about a minute the first time, cached after).
"""

from __future__ import annotations

import contextlib

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from engines.libvirt import host
from nodes.models import EngineKind, Node
from nodes.registry import forget_engines, get_engine
from nodes.signals import node_prepared
from ttportal.errors import TTError

# --template's choices for each kind (vms/template_install.py builds and registers them).
TEMPLATES = {
    EngineKind.LIBVIRT: ("busybox", "debian"),
    EngineKind.DOCKER: ("busybox",),
    EngineKind.FIRECRACKER: (),
}
DEFAULT_URI = {
    EngineKind.LIBVIRT: "qemu:///system",
    EngineKind.DOCKER: "unix:///run/podman/podman.sock",
    EngineKind.FIRECRACKER: "firecracker:///",
}


class Command(BaseCommand):
    help = "Prepare this host as a node (QEMU through libvirt, docker, firecracker) and register it."

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", default="local")
        parser.add_argument("--kind", choices=EngineKind.values, default=EngineKind.LIBVIRT)
        parser.add_argument("--uri", help="where the engine listens (default: the kind's local one)")
        parser.add_argument("--binary", default="", help="firecracker: the firecracker binary")
        parser.add_argument("--jailer", default="", help="firecracker: the jailer binary (optional)")
        parser.add_argument("--public-host", default="127.0.0.1", help="address clients dial")
        parser.add_argument("--vm-network", default="10.100.0.0/16")
        parser.add_argument("--bridge", default="ttbr0")
        parser.add_argument("--pool-name", default="tt-pool")
        parser.add_argument("--network-name", default="tt-net")
        parser.add_argument("--port-min", type=int, default=20000)
        parser.add_argument("--port-max", type=int, default=29999)
        parser.add_argument(
            "--template", action="append", nargs="?", const="busybox", choices=["busybox", "debian"],
            help="also install this template (busybox if none is named); repeat for several",
        )

    def handle(self, *args, **o):
        o["uri"] = o["uri"] or DEFAULT_URI[o["kind"]]
        wanted = ["busybox"] if o["template"] is True else list(dict.fromkeys(o["template"] or []))
        offered = TEMPLATES[o["kind"]]
        for kind in wanted:
            if kind not in offered:
                raise CommandError(
                    f"template {kind!r} has no {o['kind']} build (offered: {sorted(offered) or 'none'})")
        if not o["uri"].startswith("test://"):
            self._prepare_host(o)
        node = self._register(o)
        forget_engines()
        try:
            engine = get_engine(node)  # creates pool and network, installs the nft table
        except TTError as exc:
            raise CommandError(f"could not initialise node {node.name}: {exc}") from None
        if not node.is_test_driver:
            _allow_loopback_forwarding(node)
            _refresh_other_firewalls(node)
        self.stdout.write(f"node {node.name}: pool, network and firewall ready")
        # The VMs' side (vms.node_setup.after_node_prepared): rewire, templates.
        for _receiver, lines in node_prepared.send(sender=Node, node=node, engine=engine, templates=wanted):
            for line in lines:
                self.stdout.write(line)

    def _prepare_host(self, o) -> None:
        try:
            for line in _PREPARE[o["kind"]](o):
                self.stdout.write(line)
            host.ensure_ip_forwarding()
            host.check_vm_network(o["vm_network"], o["bridge"])
        except (host.HostNotReady, OSError) as exc:
            raise CommandError(f"this host cannot be a {o['kind']} node: {exc}") from None

    def _register(self, o) -> Node:
        node = Node.objects.filter(name=o["name"]).first() or Node(name=o["name"])
        node.kind = o["kind"]
        node.uri = o["uri"]
        node.binary, node.jailer = o["binary"], o["jailer"]
        node.public_host = o["public_host"]
        node.vm_network = o["vm_network"]
        node.bridge = o["bridge"]
        node.pool_name = o["pool_name"]
        node.network_name = o["network_name"]
        node.port_min, node.port_max = o["port_min"], o["port_max"]
        node.notes = _notes(node)
        try:
            node.full_clean()
        except ValidationError as exc:
            errors = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            raise CommandError(errors) from None
        node.save()
        return node


def _kvm() -> bool:
    from engines.kvm import host_has_working_kvm

    return host_has_working_kvm()


def _notes(node: Node) -> str:
    if node.is_test_driver:
        return "libvirt test driver: boots nothing; for tests only"
    if node.kind == EngineKind.DOCKER:
        return "containers through the Docker API (podman with runc here); images are local, never pulled"
    if node.kind == EngineKind.FIRECRACKER:
        return ("Firecracker microVMs (KVM and the binary checked at preparation). The driver is tested "
                "against Firecracker v1.16.1's API contract (every request validated by a fake firecracker "
                "that enforces the call order), not by booting: the project's CI machines have no KVM")
    return f"QEMU through libvirt ({'KVM' if _kvm() else 'TCG: no usable KVM on this host'})"


def _prepare_libvirt(o) -> list[str]:
    host.check_prerequisites()
    changed = host.ensure_qemu_conf()
    changed = host.ensure_libvirtd_conf() or changed
    return host.ensure_daemons(restart_libvirtd=changed)


def _prepare_docker(o) -> list[str]:
    from engines.docker import host as docker_host

    docker_host.check_prerequisites()
    changed = docker_host.ensure_containers_conf()
    return docker_host.ensure_service(o["uri"], restart=changed)


def _prepare_firecracker(o) -> list[str]:
    from engines.firecracker import host as fc_host

    fc_host.check_host(o["binary"], o["jailer"])
    return []


_PREPARE = {
    EngineKind.LIBVIRT: _prepare_libvirt,
    EngineKind.DOCKER: _prepare_docker,
    EngineKind.FIRECRACKER: _prepare_firecracker,
}


def _allow_loopback_forwarding(node: Node) -> None:
    """127.0.0.1:PORT on the node reaches a guest; a docker node's bridge exists only
    while a container runs (podman removes it after the last): set it at each start too."""
    with contextlib.suppress(FileNotFoundError):
        host.allow_loopback_forwarding(node.bridge)


def _refresh_other_firewalls(node: Node) -> None:
    """The other nodes of this host learn this node's VM network (their VMs may not be
    routed to it): their tables are written again, elements kept."""
    from engines.network.nftables import NftError
    from nodes.registry import node_firewall

    for other in Node.objects.exclude(pk=node.pk).exclude(uri__startswith="test://"):
        firewall = node_firewall(other)
        try:
            firewall.installed(set())  # only where its table exists on this host
        except NftError:
            continue
        firewall.ensure()
