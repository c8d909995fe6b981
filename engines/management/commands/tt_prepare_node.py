"""Prepare this host as a QEMU/KVM node and register it. Idempotent; the run and test commands call it.

Starts virtlogd/libvirtd with the qemu.conf this host needs, creates the VM
network (bridge + per-MAC DHCP) and storage pool, installs the node's nftables
table and rebuilds every port map, egress and blacklist entry from the
database, and (with --template) installs templates: `--template` alone the busybox
one, `--template debian` the Debian 12 one (about a minute the first time, cached
after), `--template busybox --template debian` both.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from engines.libvirt import host
from engines.models import EngineKind, Node
from engines.registry import forget_engines, get_engine
from ttportal.errors import TTError
from vms.models import Vm, specs_of

# --template's choices: the installer in engines.templates of each.
TEMPLATES = {"busybox": "install_busybox_template", "debian": "install_debian_template"}


class Command(BaseCommand):
    help = "Prepare this host as a libvirt/QEMU node and register it."

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", default="local")
        parser.add_argument("--uri", default="qemu:///system")
        parser.add_argument("--public-host", default="127.0.0.1", help="address clients dial")
        parser.add_argument("--vm-network", default="10.100.0.0/16")
        parser.add_argument("--bridge", default="ttbr0")
        parser.add_argument("--pool-name", default="tt-pool")
        parser.add_argument("--network-name", default="tt-net")
        parser.add_argument("--port-min", type=int, default=20000)
        parser.add_argument("--port-max", type=int, default=29999)
        parser.add_argument(
            "--template", action="append", nargs="?", const="busybox", choices=sorted(TEMPLATES),
            help="also install this template (busybox if none is named); repeat for several",
        )

    def handle(self, *args, **o):
        if not o["uri"].startswith("test://"):
            self._prepare_host(o)
        node = self._register(o)
        forget_engines()
        try:
            engine = get_engine(node)  # creates pool and network, installs the nft table
        except TTError as exc:
            raise CommandError(f"could not initialise node {node.name}: {exc}") from None
        if not node.is_test_driver:
            host.allow_loopback_forwarding(node.bridge)
        live = Vm.objects.live().filter(node=node).exclude(status=Vm.Status.CREATING)
        live = live.select_related("env", "template", "node").prefetch_related("port_mappings")
        specs = specs_of(live)
        engine.firewall.rebuild(specs)
        for spec in specs:  # DHCP entries too: a recreated network has none
            engine.set_net(spec)
        self.stdout.write(f"node {node.name}: pool, network and firewall ready; {len(specs)} VMs rewired")
        wanted = ["busybox"] if o["template"] is True else list(dict.fromkeys(o["template"] or []))
        from engines import templates  # here: it imports vms' models, not needed otherwise

        for kind in wanted:
            template = getattr(templates, TEMPLATES[kind])(node)
            self.stdout.write(f"template {template.name} ready ({template.path})")

    def _prepare_host(self, o) -> None:
        try:
            host.check_prerequisites()
            changed = host.ensure_qemu_conf()
            for line in host.ensure_daemons(restart_libvirtd=changed):
                self.stdout.write(line)
            host.ensure_ip_forwarding()
            host.check_vm_network(o["vm_network"], o["bridge"])
        except (host.HostNotReady, OSError) as exc:
            raise CommandError(f"this host cannot be a node: {exc}") from None

    def _register(self, o) -> Node:
        node = Node.objects.filter(name=o["name"]).first() or Node(name=o["name"])
        node.kind = EngineKind.LIBVIRT
        node.uri = o["uri"]
        node.public_host = o["public_host"]
        node.vm_network = o["vm_network"]
        node.bridge = o["bridge"]
        node.pool_name = o["pool_name"]
        node.network_name = o["network_name"]
        node.port_min, node.port_max = o["port_min"], o["port_max"]
        node.notes = (
            "libvirt test driver: boots nothing; for tests only" if node.is_test_driver
            else f"QEMU through libvirt ({'KVM' if _kvm() else 'TCG: no usable KVM on this host'})"
        )
        try:
            node.full_clean()
        except ValidationError as exc:
            errors = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            raise CommandError(errors) from None
        node.save()
        return node


def _kvm() -> bool:
    from engines.libvirt.engine import host_has_working_kvm

    return host_has_working_kvm()
