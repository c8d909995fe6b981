"""Register (or update) a node. Idempotent: running it again changes only what differs."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from engines.models import EngineKind, Node


class Command(BaseCommand):
    help = "Register or update a node (a host running one engine)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--kind", default=EngineKind.LIBVIRT, choices=EngineKind.values)
        parser.add_argument("--uri", required=True, help="qemu:///system, test:///default, ...")
        parser.add_argument("--public-host", required=True, help="address clients dial")
        parser.add_argument("--vm-network", default="10.100.0.0/16")
        parser.add_argument("--port-min", type=int, default=20000)
        parser.add_argument("--port-max", type=int, default=29999)
        parser.add_argument("--notes", default="")

    def handle(self, *args, **opts):
        node = Node.objects.filter(name=opts["name"]).first() or Node(name=opts["name"])
        node.kind = opts["kind"]
        node.uri = opts["uri"]
        node.public_host = opts["public_host"]
        node.vm_network = opts["vm_network"]
        node.port_min = opts["port_min"]
        node.port_max = opts["port_max"]
        if opts["notes"]:
            node.notes = opts["notes"]
        try:
            node.full_clean()
        except ValidationError as exc:
            errors = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            raise CommandError(errors) from None
        created = node.pk is None
        node.save()
        self.stdout.write(f"{'registered' if created else 'updated'} node {node.name} ({node.uri})")
