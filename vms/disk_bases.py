"""Disk bases: the read-only disks a clone's overlay sits on, counted and removed with their last user.

Cloning a VM (envs/cloning.py) cuts its disk (VmEngine.cut_disk): what it held becomes a
base, the backing file of the VM's next overlay and of each clone's. A base cut from a VM
that was itself on a base has that one as its parent. So a base's users are the live VMs
whose `disk_base` it is and the bases cut on top of it; it goes from the node and the
database once it has none, and then its parent is counted again. The count is read from
the rows, never kept in a number that a crash could leave wrong.
"""

from __future__ import annotations

import logging

from django.db import transaction

from nodes.registry import get_engine
from vms.models import DiskBase, Vm

log = logging.getLogger(__name__)


def users_of(base: DiskBase) -> int:
    """The live VMs on it and the bases cut on top of it."""
    return Vm.objects.live().filter(disk_base=base).count() + DiskBase.objects.filter(parent=base).count()


def release(base_id: int | None) -> list[str]:
    """Remove the base, and then its parents, while none has a user left; the paths removed.
    A node that cannot be asked keeps the row: the next release (or reconciliation) tries again."""
    removed = []
    while base_id is not None:
        with transaction.atomic():
            base = DiskBase.objects.select_for_update().select_related("node").filter(pk=base_id).first()
            if base is None or users_of(base):
                return removed
            try:
                get_engine(base.node).remove_image(base.volume)
            except Exception:
                log.exception("could not remove the disk base %s; the next release tries again", base)
                return removed
            base_id = base.parent_id
            base.delete()
            removed.append(base.path)
    return removed


def release_unused(node_id: int) -> list[str]:
    """Every base of the node with no user left (reconciliation: a release that failed)."""
    removed = []
    for base_id in DiskBase.objects.filter(node_id=node_id).values_list("pk", flat=True):
        removed += release(base_id)
    return removed


def volumes_of(node_id: int) -> set[str]:
    """The names of the node's volumes that are bases (reconciliation leaves them alone)."""
    return {path.rsplit("/", 1)[-1] for path in DiskBase.objects.filter(node_id=node_id)
            .values_list("path", flat=True)}
