"""Register an operator's own image as a template: a qcow2 file (a full disk with its own
bootloader) for a QEMU node, or a container image already on a docker node, by name."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from engines.errors import EngineError
from nodes.models import EngineKind, Node
from vms.template_install import register_image_template, register_qcow2_template


class Command(BaseCommand):
    help = "Register a qcow2 file (QEMU node) or a local container image (docker node) as a template."

    def add_arguments(self, parser):
        parser.add_argument("name", help='globally unique template name, e.g. "acme/debian-12"')
        parser.add_argument("image", help="QEMU node: path of the qcow2 file on this machine; "
                            "docker node: the image's name on that node, e.g. acme/app:1.2")
        parser.add_argument("--node", default="local")
        parser.add_argument("--memo", default="")
        parser.add_argument("--min-mem-mb", type=int, default=None,
                            help="default: 256 for a QEMU image, 16 for a container image")

    def handle(self, *args, **o):
        node = Node.objects.filter(name=o["node"]).first()
        if node is None:
            raise CommandError(f"no node named {o['node']!r} (prepare one with tt_prepare_node)")
        if node.kind == EngineKind.DOCKER:
            try:
                template = register_image_template(node, name=o["name"], image=o["image"], memo=o["memo"],
                                                   min_mem_mb=o["min_mem_mb"] or 16)
            except EngineError as exc:
                raise CommandError(f"image: {exc}") from None
            self.stdout.write(
                f"template {template.name} registered: image {template.path}, {template.size_mb} MiB")
            return
        image = Path(o["image"])
        if not image.is_file():
            raise CommandError(f"image: {image} is not a file")
        try:
            template = register_qcow2_template(
                node, name=o["name"], image=image, memo=o["memo"], min_mem_mb=o["min_mem_mb"] or 256
            )
        except ValueError as exc:
            raise CommandError(f"image: {exc}") from None
        self.stdout.write(
            f"template {template.name} registered: {template.size_mb} MiB, volume {template.path}"
        )
