"""VmTemplate, Vm (the seed's Vm + VmState + VmResource), PortMapping, Snapshot.

The seed is the design model the project implements: docs/seed.md maps its types to these."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Case, Q, Value, When
from django.utils import timezone

import ttportal.lookups  # noqa: F401 (registers __among, the lookup of visible_to)
from engines.cloudinit import CloudInitSpec
from engines.specs import PortSpec, TemplateSpec, VmSpec
from nodes.models import EngineKind, Node
from ttportal import permissions
from ttportal.validators import validate_dns_label

# A template feature: the guest runs cloud-init and reads a NoCloud seed on first boot.
CLOUD_INIT = "cloud-init"
# A template feature: the guest runs qemu-guest-agent (a QEMU VM of it gets the agent's channel).
GUEST_AGENT = "guest-agent"
# Template features: a command can be run in its guests, and files copied in and out (a
# guest agent in a VM's guest, any container). The engine must have them too (Feature.EXEC,
# Feature.FILES): vms/guest_access.py checks both, and names the one missing.
EXEC = "exec"
FILES = "files"


def engine_kinds_in_service() -> frozenset[str]:
    """The engine kinds some enabled node runs: a template can be run if it supports one."""
    return frozenset(Node.objects.filter(enabled=True).order_by().values_list("kind", flat=True).distinct())


class VmTemplateQuerySet(models.QuerySet):
    """What can be offered to users: templates that are enabled and that some enabled node
    can run (vms.placement refuses the others anyway, so offering them only sets
    up a refusal).

    compatible_engines is a JSON list, and SQLite has no containment lookup on JSON: the
    engines are compared here, in Python, and the result filters by id. Two queries
    (the kinds in service, the enabled templates' engines) whatever the numbers."""

    def _runnable_ids(self, kinds: frozenset[str] | None) -> list[int]:
        kinds = engine_kinds_in_service() if kinds is None else kinds
        rows = self.filter(enabled=True).order_by().values_list("pk", "compatible_engines")
        return [pk for pk, engines in rows if isinstance(engines, list) and not kinds.isdisjoint(engines)]

    def with_runnable(self, kinds: frozenset[str] | None = None) -> VmTemplateQuerySet:
        """Every template, each with `runnable` (bool): staff see those that are not, marked."""
        ids = self._runnable_ids(kinds)
        if not ids:  # nothing is runnable: no CASE to build
            return self.annotate(runnable=Value(False))
        return self.annotate(runnable=Case(When(pk__in=ids, then=Value(True)), default=Value(False)))

    def runnable(self, kinds: frozenset[str] | None = None) -> VmTemplateQuerySet:
        """The templates a new VM can be made from now (`kinds`: engine_kinds_in_service(),
        when the caller has read it already)."""
        return self.with_runnable(kinds).filter(runnable=True)


class VmTemplate(models.Model):
    name = models.CharField(max_length=200, unique=True, help_text='Globally unique, e.g. "tt/busybox".')
    path = models.CharField(
        max_length=500, help_text="Volume name in the node's pool, or an absolute image path."
    )
    memo = models.TextField(blank=True)
    compatible_engines = models.JSONField(default=list, help_text='Engine kinds, e.g. ["libvirt"].')
    features = models.JSONField(default=list, blank=True)
    # What an engine needs to boot it: direct kernel boot when `kernel` is set,
    # else the image's own bootloader.
    # Volume names in the node's pool (or absolute paths on the node).
    kernel = models.CharField(max_length=500, blank=True)
    initrd = models.CharField(max_length=500, blank=True)
    cmdline = models.CharField(max_length=1000, blank=True)
    size_mb = models.PositiveIntegerField(default=0, help_text="Virtual size of the image, MiB.")
    min_cpu = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1)])
    min_mem_mb = models.PositiveIntegerField(default=64, validators=[MinValueValidator(16)])
    default_ports = models.JSONField(
        default=list, blank=True,
        help_text='Ports the create form offers for a VM of it, as users write them: '
        '["22"], ["80", "53/udp"].',
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = VmTemplateQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def engine_labels(self, kinds: frozenset[str], *, in_service: bool = True) -> list[str]:
        """Its engines as people read them ("Docker", "QEMU/KVM (libvirt)"): those an enabled
        node runs (`kinds`: engine_kinds_in_service()), or with in_service=False the others."""
        engines = self.compatible_engines if isinstance(self.compatible_engines, list) else []
        return [engine_label(kind) for kind in engines if (kind in kinds) == in_service]

    @property
    def min_disk_mb(self) -> int:
        return max(self.size_mb, 1)

    def supports(self, engine_kind: str) -> bool:
        return engine_kind in (self.compatible_engines or [])

    def to_spec(self) -> TemplateSpec:
        return TemplateSpec(
            name=self.name, path=self.path, size_mb=self.size_mb,
            kernel=self.kernel, initrd=self.initrd, cmdline=self.cmdline,
            cloud_init=CLOUD_INIT in (self.features or []),
            guest_agent=GUEST_AGENT in (self.features or []),
        )


_ENGINE_LABELS = dict(EngineKind.choices)  # built once: EngineKind.values is a new list per read


def engine_label(kind: str) -> str:
    """An engine kind as people read it; a kind no longer known, as stored."""
    return _ENGINE_LABELS.get(kind, kind)


def live_vms(prefix: str = "vms") -> Q:
    """The one rule for a live VM, as a filter: every VM not destroyed yet. Until then it
    holds its node's CPU, memory, addresses and ports (a VM in `error` too), so
    scheduling, the admin's counts and the portal all count it.

    For VMs reached through a relation, name it: `Count("vms", filter=live_vms())` on an
    Env, a Node or a template; `live_vms("")` filters Vm rows themselves (VmQuerySet.live).
    """
    field = f"{prefix}__status" if prefix else "status"
    return ~Q(**{field: Vm.Status.DESTROYED})


class VmQuerySet(models.QuerySet):
    def visible_to(self, user) -> VmQuerySet:
        # Warm spares are the site's, shown with their pools in the admin.
        if permissions.sees_others(user, "vm_view"):
            # Not in the pools' Envs (a handful): PostgreSQL counts 10,000 VMs so in 1.3 ms,
            # joined with every Env to read its flag in 2.9 (the staff VM list's count).
            return self.exclude(env_id__in=env_model().objects.filter(is_warm_pool=True).values("pk"))
        if user is None or not user.is_authenticated:
            return self.none()
        # Their own Envs' and those shared with them (envs.EnvMember): one subquery of Env ids.
        return self.filter(env_id__among=env_model().objects.ids_of(user))

    def live(self) -> VmQuerySet:
        """The VMs not destroyed: the rule of live_vms()."""
        return self.filter(live_vms(""))

    def for_specs(self) -> VmQuerySet:
        """With every row Vm.to_spec reads, for code that builds the specs of many VMs
        (reconciliation, a node's set-up): one query, not one per VM and relation."""
        return self.select_related("env", "template", "node", "disk_base").prefetch_related("port_mappings")


class StartKind(models.TextChoices):
    COLD = "cold", "cold (booted)"
    WARM = "warm", "warm (restored from a spare)"


class Vm(models.Model):
    StartKind = StartKind

    class Status(models.TextChoices):
        CREATING = "creating"
        STOPPED = "stopped"
        STARTING = "starting"
        RUNNING = "running"
        STOPPING = "stopping"
        SUSPENDING = "suspending"
        SUSPENDED = "suspended"  # stopped with its memory saved: the next start resumes it
        SNAPSHOTTING = "snapshotting"
        RESTORING = "restoring"
        DESTROYING = "destroying"
        DESTROYED = "destroyed"
        ERROR = "error"

    class NetKind(models.TextChoices):
        NAT = "nat", "NAT (ports forwarded through the node)"
        FLAT = "flat", "Flat (the VM's own address is routable)"

    # By name: envs sits above vms (docs/architecture.md). vms reads an Env through this
    # relation (vm.env.owner_id), and the model itself through env_model().
    env = models.ForeignKey("envs.Env", on_delete=models.CASCADE, related_name="vms")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="vms")
    template = models.ForeignKey(VmTemplate, on_delete=models.PROTECT, related_name="vms")
    name = models.CharField(max_length=63, validators=[validate_dns_label])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATING)
    runtime_image = models.CharField(max_length=500, blank=True, help_text="Not always a file path.")
    net_kind = models.CharField(max_length=8, choices=NetKind.choices, default=NetKind.NAT)
    addr = models.CharField(max_length=255, blank=True, help_text="What a client dials.")
    features = models.JSONField(default=list, blank=True)
    latest_meta = models.JSONField(null=True, blank=True, help_text="The config as last applied.")
    # The seed's VmState.
    keep_image = models.BooleanField(default=False)
    rand_uuid = models.BooleanField(default=True)
    uuid = models.CharField(max_length=36, blank=True)
    net_blacklist = models.JSONField(default=list, blank=True)
    # First boot (templates with cloud-init): the owner's public keys as they were when
    # the VM was made (later changes to their keys do not reach it), and their own
    # #cloud-config, if any.
    ssh_keys = models.JSONField(default=list, blank=True, editable=False)
    user_data = models.TextField(blank=True)
    # Set while a network change (ports, blacklist, egress) is being applied to
    # the node: such changes are applied as differences, so they must not overlap.
    net_busy = models.BooleanField(default=False, editable=False)
    # The seed's VmResource. mac/ip are released (NULL) when the VM is destroyed.
    cpu_num = models.PositiveSmallIntegerField(validators=[MinValueValidator(1), MaxValueValidator(64)])
    mem_mb = models.PositiveIntegerField(validators=[MinValueValidator(16), MaxValueValidator(262144)])
    disk_mb = models.PositiveIntegerField(validators=[MinValueValidator(1), MaxValueValidator(4194304)])
    # NULL, not "", once released: NULLs never collide in the unique constraint.
    mac = models.CharField(max_length=17, null=True, blank=True)  # noqa: DJ001
    ip = models.GenericIPAddressField(protocol="IPv4", null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    destroyed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Its Env sleeps (envs/sleep.py): while it is suspended it gives its vCPUs and memory
    # back to its node (the node's use counters leave them out; a wake takes them again).
    asleep_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Warm start (vms/warm.py): while `warm_pool` is set the VM is a spare of that pool,
    # in the pool's own Env, booted from the template `warm_key` fingerprints and saved.
    # A create that takes it moves the row (pk, engine name, MAC, IP) into its Env.
    # (A pool is deleted only once it holds no live spare: vms.warm.pool_delete.)
    warm_pool = models.ForeignKey("WarmPool", null=True, blank=True, editable=False,
                                  on_delete=models.SET_NULL, related_name="spares")
    warm_key = models.CharField(max_length=64, blank=True, editable=False)
    start_kind = models.CharField(
        max_length=8, choices=StartKind.choices, default=StartKind.COLD, editable=False,
        help_text="How it was first started: booted, or restored from a warm spare.",
    )

    # Cloning (envs/cloning.py): the disk its overlay sits on when that is not the template's
    # (a base cut from a VM's disk, its own or its source's), and the VM it is a clone of.
    disk_base = models.ForeignKey("DiskBase", null=True, blank=True, editable=False,
                                  on_delete=models.SET_NULL, related_name="vms")
    clone_of = models.ForeignKey("self", null=True, blank=True, editable=False,
                                 on_delete=models.SET_NULL, related_name="clones")

    objects = VmQuerySet.as_manager()

    class Meta:
        ordering = ["env_id", "name", "id"]
        # Into another user's running VM (ttportal.permissions: vm_exec, vm_files, vm_console):
        # each its own, apart from change_vm, since each reads or writes what the guest holds.
        permissions = [
            ("exec_vm", "Can run commands in another user's VM"),
            ("files_vm", "Can copy files to and from another user's VM"),
            ("console_vm", "Can use the console of another user's VM"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["node", "mac"], name="vm_mac_unique_per_node"),
            models.UniqueConstraint(fields=["node", "ip"], name="vm_ip_unique_per_node"),
            models.UniqueConstraint(
                fields=["env", "name"], condition=~Q(status="destroyed"), name="vm_name_unique_per_env_live",
                violation_error_message="This Env already has a VM with this name.",
            ),
        ]
        indexes = [
            models.Index(fields=["node", "status"], name="vm_node_status_idx"),
            # What each node's use is summed from (vms/node_usage.py: counted(), which the
            # reconcile pass checks the counters placement reads against), read from the
            # index alone: the live VMs only (partial), with every column it reads (status
            # and pool: a suspended VM's saved memory). Without status in it SQLite read
            # each VM's row: 10,000 VMs summed in 13 ms rather than 3.
            models.Index(fields=["node", "cpu_num", "mem_mb", "disk_mb", "status", "warm_pool"],
                         condition=~Q(status="destroyed"), name="vm_live_node_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.env.name}/{self.name}"

    @property
    def is_live(self) -> bool:
        """live_vms() for one loaded VM."""
        return self.status != Vm.Status.DESTROYED

    @property
    def engine_name(self) -> str:
        """Domain/volume name: unique per node, and across nodes sharing one libvirt daemon."""
        return f"tt-{self.node.name}-{self.pk}"

    # What people are shown while the VM's node is down (nodes/fleet.py): its last
    # known status may no longer be true, and nothing can be asked of it.
    UNKNOWN = "unknown"

    @property
    def shown_status(self) -> str:
        """The status, or `unknown` while its node is down (the row keeps the last known)."""
        if self.status != Vm.Status.DESTROYED and self.node.down_since is not None:
            return Vm.UNKNOWN
        return self.status

    def to_spec(self, *, ports=None, reach: tuple[int, ...] | None = None) -> VmSpec:
        """The plain description a driver works from (no models cross that line).

        Lists of VMs pass `reach` from one Env.objects.reach_of() query (specs_of)."""
        if ports is None:
            ports = self.port_mappings.all()
        if reach is None:
            reach = env_model().objects.reach_of([self.env_id])[self.env_id]
        return VmSpec(
            id=self.pk,
            name=self.engine_name,
            template=self.template.to_spec(),
            cpu_num=self.cpu_num,
            mem_mb=self.mem_mb,
            disk_mb=self.disk_mb,
            mac=self.mac or "",
            ip=self.ip or "",
            runtime_image=self.runtime_image,
            net_kind=self.net_kind,
            uuid=self.uuid,
            ports=tuple(PortSpec(p.protocol, p.inner_port, p.public_port) for p in ports),
            deny_outgoing=self.env.deny_outgoing,
            blacklist=tuple(self.net_blacklist or ()),
            keep_image=self.keep_image,
            env_id=self.env_id,
            reach=reach,
            cloud_init=self.cloud_init_spec(),
            # A warm spare's memory is kept once its guest is up, saved to disk by default (vms/warm.py).
            zero_freed_memory=self.warm_pool_id is not None,
            base_image=self.disk_base.path if self.disk_base_id else "",
            machine_id=self.uuid.replace("-", "") if self.clone_of_id and self.uuid else "",
            # Its Env sleeps: its TCP ports lead to its node's waker (envs/sleep.py).
            wake_to=(self.node.gateway_ip, settings.TT_WAKER_PORT) if self.env.asleep_since else None,
        )

    def cloud_init_spec(self) -> CloudInitSpec | None:
        if CLOUD_INIT not in (self.features or []):
            return None
        return CloudInitSpec(
            hostname=self.name,
            # Tied to this VM (its id and creation time): a new VM is a new instance.
            instance_id=f"{self.engine_name}-{int(self.created_at.timestamp())}",
            ssh_keys=tuple(self.ssh_keys or ()),
            user_data=self.user_data,
        )


def env_model() -> type[models.Model]:
    """envs.Env, reached through Vm.env. envs sits above vms: vms names it only in that
    relation and never imports it, and asks it only what Env itself answers (its status,
    `objects.live()`, `objects.reach_of()`)."""
    return Vm._meta.get_field("env").related_model


def specs_of(vms) -> list[VmSpec]:
    """Many VMs' specs, with the Envs they may be reached from read in one query."""
    vms = list(vms)
    reach = env_model().objects.reach_of({vm.env_id for vm in vms})
    return [vm.to_spec(reach=reach[vm.env_id]) for vm in vms]


class DiskBase(models.Model):
    """A read-only disk cut from a VM's when it was cloned (vms/disk_bases.py): the backing
    file of that VM's next overlay and of its clones'. Reference-counted: its users are the
    live VMs whose `disk_base` it is and the bases cut on top of it; it is removed from the
    node with its last user."""

    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="disk_bases")
    path = models.CharField(max_length=500)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT,
                               related_name="children")
    source_vm = models.ForeignKey(Vm, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["node", "path"], name="disk_base_unique_path")]

    def __str__(self) -> str:
        return f"{self.node.name}: {self.path}"

    @property
    def volume(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class PortMapping(models.Model):
    """One forwarded port: node public port -> VM inner port (NAT VMs only)."""

    class Protocol(models.TextChoices):
        TCP = "tcp"
        UDP = "udp"

    vm = models.ForeignKey(Vm, on_delete=models.CASCADE, related_name="port_mappings")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="port_mappings")
    protocol = models.CharField(max_length=3, choices=Protocol.choices, default=Protocol.TCP)
    inner_port = models.PositiveIntegerField(validators=[MinValueValidator(1), MaxValueValidator(65535)])
    public_port = models.PositiveIntegerField(validators=[MinValueValidator(1), MaxValueValidator(65535)])

    class Meta:
        ordering = ["vm_id", "protocol", "inner_port"]
        constraints = [
            models.UniqueConstraint(
                fields=["node", "protocol", "public_port"], name="port_public_unique_per_node"
            ),
            models.UniqueConstraint(fields=["vm", "protocol", "inner_port"], name="port_inner_unique_per_vm"),
        ]

    def __str__(self) -> str:
        return f"{self.node.public_host}:{self.public_port} -> {self.inner_port}/{self.protocol}"

    @property
    def endpoint(self) -> str:
        return f"{self.node.public_host}:{self.public_port}"

    @property
    def inner_label(self) -> str:
        return port_label(self.inner_port, self.protocol)


def ssh_command(host: str, public_port: int) -> str:
    """How a user gets into a VM that forwards TCP 22 (as `tt`, the cloud-init templates' user)."""
    return f"ssh -p {public_port} tt@{host}"


def ssh_commands(host: str, mappings) -> list[str]:
    """The ssh line of each (public port, inner port, protocol) that forwards TCP 22."""
    return [ssh_command(host, public) for public, inner, protocol in mappings
            if inner == SSH_PORT and protocol == PortMapping.Protocol.TCP]


SSH_PORT = 22


def port_label(port: int, protocol: str) -> str:
    """ "22" for TCP, "53/udp" otherwise: how users write ports."""
    return str(port) if protocol == PortMapping.Protocol.TCP else f"{port}/{protocol}"


class SnapshotQuerySet(models.QuerySet):
    def visible_to(self, user) -> SnapshotQuerySet:
        if permissions.sees_others(user, "snapshot_view"):
            return self
        if user is None or not user.is_authenticated:
            return self.none()
        return self.filter(vm__env_id__among=env_model().objects.ids_of(user))


class Snapshot(models.Model):
    class Status(models.TextChoices):
        CREATING = "creating"
        READY = "ready"
        APPLYING = "applying"
        DESTROYING = "destroying"

    vm = models.ForeignKey(Vm, on_delete=models.CASCADE, related_name="snapshots")
    name = models.CharField(max_length=63, validators=[validate_dns_label])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATING)
    path = models.CharField(max_length=500, blank=True, help_text="Engine reference to the data.")
    meta = models.JSONField(default=dict, blank=True, help_text="The VM's config when taken.")
    life_time = models.PositiveIntegerField(null=True, blank=True, help_text="Seconds; empty = kept.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = SnapshotQuerySet.as_manager()

    class Meta:
        ordering = ["vm_id", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["vm", "name"], name="snapshot_name_unique_per_vm"),
        ]
        indexes = [models.Index(fields=["status", "expires_at"], name="snapshot_expiry_idx")]

    def __str__(self) -> str:
        return f"{self.vm}@{self.name}"


class WarmPool(models.Model):
    """Spare VMs of one template kept booted and saved on one node (vms/warm.py): a create
    that asks for a VM of a size the pool covers takes a spare and restores it."""

    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="warm_pools")
    template = models.ForeignKey(VmTemplate, on_delete=models.PROTECT, related_name="warm_pools")
    size = models.PositiveSmallIntegerField(
        default=2, validators=[MaxValueValidator(32)],
        help_text="Spares kept ready for each VM size it covers (at most 32); 0 keeps none.",
    )
    # [{"cpu_num": 1, "mem_mb": 128, "disk_mb": 0}, ...]; disk 0: the template's size.
    vm_sizes = models.JSONField(default=list, help_text="The VM sizes it covers.")
    class Keep(models.TextChoices):
        SAVED = "saved", "saved to disk: no memory held, restored in about half a second"
        PAUSED = "paused", "paused in memory: its memory held, resumed at once"

    keep = models.CharField(max_length=8, choices=Keep.choices, default=Keep.SAVED,
                            help_text="How a spare waits to be taken.")
    enabled = models.BooleanField(default=True, help_text="Off: its spares are discarded, none made.")
    env = models.OneToOneField("envs.Env", on_delete=models.PROTECT, related_name="warm_pool", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["node__name", "template__name"]
        constraints = [
            models.UniqueConstraint(fields=["node", "template"], name="warm_pool_one_per_node_template"),
        ]

    def __str__(self) -> str:
        return f"{self.node.name}/{self.template.name}"


class NodeUsage(models.Model):
    """What a node's live VMs hold, kept as counters: what placement's filters weigh
    (vms/placement.py), read in one row per node instead of summed over every VM.

    The database keeps them: triggers on the VMs, their ports, their snapshots, the
    warm pools and the nodes (vms/migrations/0011_node_usage.py) change them in the
    statement that changes what they count, so in its transaction, whatever wrote it
    (a service, a step, the reconcile, the admin, a bulk insert). The reconcile pass
    compares them with a count from scratch and corrects any drift, saying so in its
    log (vms/node_usage.py). What a live VM holds is vms.node_usage.counted()'s rule."""

    node = models.OneToOneField(Node, on_delete=models.CASCADE, primary_key=True, related_name="usage")
    vms = models.IntegerField(default=0, help_text="Live VMs (not destroyed; warm spares too).")
    cpu = models.BigIntegerField(default=0, help_text="Their vCPUs.")
    mem_mb = models.BigIntegerField(default=0, help_text="Their memory, MiB.")
    disk_mb = models.BigIntegerField(default=0, help_text="Their disks (disk_mb each), MiB.")
    saved_mb = models.BigIntegerField(
        default=0, help_text="Memory saved on the node's disk: suspended or suspending VMs but "
        "the spares of pools that keep them paused, MiB.")
    snapshots_mb = models.BigIntegerField(
        default=0, help_text="Their snapshots, each estimated at its VM's disk_mb, MiB.")
    tcp_ports = models.IntegerField(default=0, help_text="Public TCP ports forwarded.")
    udp_ports = models.IntegerField(default=0, help_text="Public UDP ports forwarded.")

    COUNTERS = ("vms", "cpu", "mem_mb", "disk_mb", "saved_mb", "snapshots_mb", "tcp_ports", "udp_ports")

    def __str__(self) -> str:
        return f"use of {self.node_id}"
