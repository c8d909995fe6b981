"""Node: one host running one engine, with the address space and ports it owns."""

from __future__ import annotations

import ipaddress

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

MAC_PREFIX_RE = r"^[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$"


class EngineKind(models.TextChoices):
    LIBVIRT = "libvirt", "QEMU/KVM (libvirt)"
    DOCKER = "docker", "Docker"
    FIRECRACKER = "firecracker", "Firecracker"


def validate_vm_network(value: str) -> None:
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ValidationError(f"must be an IPv4 network like 10.100.0.0/16 ({exc})") from None
    # The host part comes from the MAC's last three bytes: at most 24 bits of it.
    if not 8 <= net.prefixlen <= 24:
        raise ValidationError("prefix length must be between /8 and /24")


class Node(models.Model):
    name = models.SlugField(max_length=63, unique=True)
    kind = models.CharField(max_length=16, choices=EngineKind.choices, default=EngineKind.LIBVIRT)
    uri = models.CharField(
        max_length=255,
        help_text="Where the engine listens: qemu:///system, qemu+ssh://host/system, "
        "unix:///run/docker.sock. test:///default is libvirt's in-process test driver: "
        "it boots nothing and is for tests only.",
    )
    public_host = models.CharField(
        max_length=255, help_text="Address clients dial to reach forwarded ports."
    )
    vm_network = models.CharField(
        max_length=18,
        default="10.100.0.0/16",
        validators=[validate_vm_network],
        help_text="The VMs' network; a VM's address is this network plus its MAC's low bits.",
    )
    mac_prefix = models.CharField(
        max_length=8, default="52:54:00", validators=[RegexValidator(MAC_PREFIX_RE)]
    )
    port_min = models.PositiveIntegerField(
        default=20000, validators=[MinValueValidator(1024), MaxValueValidator(65535)]
    )
    port_max = models.PositiveIntegerField(
        default=29999, validators=[MinValueValidator(1024), MaxValueValidator(65535)]
    )
    pool_name = models.CharField(max_length=64, default="tt-pool")
    network_name = models.CharField(max_length=64, default="tt-net")
    bridge = models.CharField(
        max_length=15, default="ttbr0", validators=[RegexValidator(r"^[a-zA-Z0-9_-]{1,15}$")],
        help_text="Linux bridge of the VM network (at most 15 characters).",
    )
    binary = models.CharField(
        max_length=255, blank=True,
        help_text="Firecracker nodes: the firecracker binary (empty: `firecracker` on PATH).",
    )
    jailer = models.CharField(
        max_length=255, blank=True,
        help_text="Firecracker nodes: the jailer binary; empty runs firecracker without it.",
    )
    cpu_capacity = models.PositiveIntegerField(default=0, help_text="vCPUs offered; 0 = unlimited")
    mem_capacity_mb = models.PositiveIntegerField(default=0, help_text="MiB offered; 0 = unlimited")
    disk_capacity_mb = models.PositiveIntegerField(
        default=0,
        help_text="MiB of disk offered to guests (their disks, snapshots, saved memory); 0 = the "
        "size of the filesystem that holds them, as the node's heartbeat reports it. Set it when "
        "that filesystem holds other things too.",
    )
    enabled = models.BooleanField(default=True)
    drained = models.BooleanField(
        default=False,
        help_text="Drained: no new VM is placed here; what runs keeps running and can be managed.",
    )
    own_cluster = models.BooleanField(
        default=False,
        help_text="Its tasks run on a task cluster named after the node, on its own host "
        "(./tt.sh node-worker NAME), which must beat: a node that stops beating is down. "
        "Off: the site's cluster runs them (one host).",
    )
    down_since = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="Set when its cluster stopped beating; cleared by the next beat.",
    )
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # The table keeps the name it had when Node was a model of the `engines` app.
        db_table = "engines_node"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(port_min__lte=models.F("port_max")),
                name="node_port_range_ordered",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.port_min > self.port_max:
            raise ValidationError({"port_max": "must not be below port_min"})

    # --- address arithmetic: MAC <-> IP, both derived from one host index ----
    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.vm_network)

    @property
    def gateway_ip(self) -> str:
        return str(self.network.network_address + 1)

    def host_index_bounds(self) -> tuple[int, int]:
        """Usable host indexes: skip the network address, the gateway (.1) and broadcast."""
        return 2, self.network.num_addresses - 2

    def ip_for_index(self, index: int) -> str:
        return str(self.network.network_address + index)

    def mac_for_index(self, index: int) -> str:
        """The MAC whose last three bytes carry the host index (the seed's rule)."""
        low = index.to_bytes(3, "big")
        return self.mac_prefix + ":" + ":".join(f"{b:02x}" for b in low)

    @staticmethod
    def index_for_mac(mac: str) -> int:
        return int("".join(mac.split(":")[3:]), 16)

    def ip_for_mac(self, mac: str) -> str:
        """The seed: the IP is the MAC's last three bytes, inside this node's network."""
        hostmask = int(self.network.hostmask)
        return self.ip_for_index(self.index_for_mac(mac) & hostmask)

    @property
    def is_test_driver(self) -> bool:
        return self.uri.startswith("test://")


class NodeHeartbeat(models.Model):
    """The last beat of a node's task cluster, with what the node has free.

    Its own table, not columns of Node: beats come every few seconds, and placement
    locks Node rows (vms/placement.py); a beat never waits for a placement.
    """

    node = models.OneToOneField(Node, on_delete=models.CASCADE, primary_key=True, related_name="heartbeat")
    beat_at = models.DateTimeField()
    worker = models.CharField(max_length=200, help_text="The worker process that beat.")
    cpu_free = models.IntegerField(null=True, blank=True, help_text="vCPUs free; empty = unlimited.")
    mem_free_mb = models.BigIntegerField(null=True, blank=True, help_text="MiB free; empty = unlimited.")
    ports_free = models.IntegerField(help_text="Public ports free (TCP and UDP counted apart: the fewer).")
    addresses_free = models.IntegerField()
    vms_running = models.IntegerField(help_text="Instances the engine reports running.")
    host_cpus = models.PositiveIntegerField(default=0, help_text="CPUs of the host the cluster runs on.")
    host_mem_mb = models.PositiveBigIntegerField(default=0, help_text="Memory of that host.")
    disk_total_mb = models.BigIntegerField(
        null=True, blank=True, help_text="Size of the filesystem holding the guest disks; empty = unknown.")
    disk_free_mb = models.BigIntegerField(
        null=True, blank=True, help_text="What may still be written there; empty = unknown.")
    engine_ok = models.BooleanField(default=True)
    engine_note = models.CharField(max_length=500, blank=True,
                                   help_text="What the engine's health check said.")

    class Meta:
        db_table = "engines_nodeheartbeat"  # as when it was a model of the `engines` app

    def __str__(self) -> str:
        return f"{self.node_id} at {self.beat_at:%H:%M:%S}"
