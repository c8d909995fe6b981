"""Register an operator's own qcow2 image (a full disk with its own bootloader) as a template."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from engines.models import Node
from engines.templates import register_qcow2_template


class Command(BaseCommand):
    help = "Upload a qcow2 image into a node's pool and register it as a template."

    def add_arguments(self, parser):
        parser.add_argument("name", help='globally unique template name, e.g. "acme/debian-12"')
        parser.add_argument("image", type=Path, help="path of the qcow2 file on this machine")
        parser.add_argument("--node", default="local")
        parser.add_argument("--memo", default="")
        parser.add_argument("--min-mem-mb", type=int, default=256)

    def handle(self, *args, **o):
        node = Node.objects.filter(name=o["node"]).first()
        if node is None:
            raise CommandError(f"no node named {o['node']!r} (prepare one with tt_prepare_node)")
        if not o["image"].is_file():
            raise CommandError(f"image: {o['image']} is not a file")
        try:
            template = register_qcow2_template(
                node, name=o["name"], image=o["image"], memo=o["memo"], min_mem_mb=o["min_mem_mb"]
            )
        except ValueError as exc:
            raise CommandError(f"image: {exc}") from None
        self.stdout.write(
            f"template {template.name} registered: {template.size_mb} MiB, volume {template.path}"
        )
