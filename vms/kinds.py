"""The operation kinds of vms (and of the nodes' drift records): registered with
operations (vms/apps.py)."""

from __future__ import annotations

from django.db.models import TextChoices


class VmKind(TextChoices):
    VM_ADD = "vm_add", "Add VM"
    VM_START = "vm_start", "Start VM"
    VM_STOP = "vm_stop", "Stop VM"
    VM_SUSPEND = "vm_suspend", "Suspend VM"
    VM_DESTROY = "vm_destroy", "Destroy VM"
    VM_SET_BLACKLIST = "vm_set_blacklist", "Set blacklist"
    VM_SET_PORTS = "vm_set_ports", "Set forwarded ports"
    SNAPSHOT_CREATE = "snapshot_create", "Take snapshot"
    SNAPSHOT_APPLY = "snapshot_apply", "Apply snapshot"
    SNAPSHOT_DESTROY = "snapshot_destroy", "Delete snapshot"
    SNAPSHOT_EXPIRE = "snapshot_expire", "Expire snapshot"
    VM_RECONCILE = "vm_reconcile", "Reconcile VM"
    NODE_DRIFT = "node_drift", "Drift on a node"
    WARM_FILL = "warm_fill", "Fill warm pool"
    WARM_DISCARD = "warm_discard", "Discard warm spares"
    VM_DISK_STOP = "vm_disk_stop", "Stop VM past its disk"
    # Records of what was done in a running guest (vms/guest_access.py): never queued.
    VM_EXEC = "vm_exec", "Run command"
    VM_FILE_PUT = "vm_file_put", "Upload file"
    VM_FILE_GET = "vm_file_get", "Download file"
    # The live console (vms/console.py): who opened it and when, how long it stayed open;
    # never what was typed or shown.
    VM_CONSOLE_OPEN = "vm_console_open", "Open console"
    VM_CONSOLE_CLOSE = "vm_console_close", "Close console"


def register() -> None:
    from operations import registry

    registry.register_kinds(VmKind, tags={
        registry.UNCAPPED: {VmKind.VM_DESTROY, VmKind.SNAPSHOT_DESTROY},
        registry.CREATES_VMS: {VmKind.VM_ADD},
    })
