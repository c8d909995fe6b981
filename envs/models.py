"""Env (the seed's Env + EnvState) and Operation (the async-op and audit record)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.functional import cached_property

from engines.errors import ErrorCode
from ttportal import permissions
from ttportal.validators import validate_dns_label


class EnvQuerySet(models.QuerySet):
    def visible_to(self, user) -> EnvQuerySet:
        """The one scoping rule: staff with envs.view_env see every Env (envs.policy), everyone
        else only their own."""
        if permissions.sees_others(user, "env_view"):
            return self.filter(is_warm_pool=False)
        return self.filter(owner=user)

    def live(self) -> EnvQuerySet:
        return self.exclude(status=Env.Status.DESTROYED)


class Env(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        DESTROYING = "destroying"
        DESTROYED = "destroyed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="envs")
    name = models.CharField(max_length=63, validators=[validate_dns_label])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    start_at = models.DateTimeField(editable=False, help_text="Fixed when created; never changes.")
    end_at = models.DateTimeField(help_text="The owner may move it; the Env is cleaned up after it.")
    # The seed's EnvState.
    is_stopped = models.BooleanField(default=False)
    deny_outgoing = models.BooleanField(default=False)
    last_mgmt_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The Env of a warm pool's spares (vms/warm.py): owned by the site, never expired,
    # shown in the admin only.
    is_warm_pool = models.BooleanField(default=False, editable=False)
    destroyed_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = EnvQuerySet.as_manager()

    class Meta:
        ordering = ["-start_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "name"],
                condition=~Q(status="destroyed"),
                name="env_name_unique_per_owner_live",
                violation_error_message="You already have a live Env with this name.",
            ),
            models.CheckConstraint(
                condition=Q(end_at__gte=models.F("start_at")), name="env_end_after_start"
            ),
        ]
        indexes = [models.Index(fields=["status", "end_at"], name="env_expiry_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.owner})"

    @property
    def is_live(self) -> bool:
        return self.status != self.Status.DESTROYED

    @cached_property
    def node_count(self) -> int:
        """How many nodes its live VMs run on (placement keeps an Env on one while it fits)."""
        return self.vms.live().order_by().values("node_id").distinct().count() if self.pk else 0

    @property
    def spans_nodes(self) -> bool:
        """Its live VMs run on more than one node (no single node had room for them all)."""
        return self.node_count > 1

    def seconds_left(self, now=None) -> int:
        now = now or timezone.now()
        return max(0, int((self.end_at - now).total_seconds()))


class PeeringQuerySet(models.QuerySet):
    def of(self, env: Env) -> PeeringQuerySet:
        return self.filter(Q(env_a=env) | Q(env_b=env))

    def current(self) -> PeeringQuerySet:
        return self.exclude(status=Peering.Status.ENDED)

    def reach_of(self, env_ids) -> dict[int, tuple[int, ...]]:
        """Env id -> the Envs whose VMs may reach its VMs: itself and its active peers."""
        reach = {pk: {pk} for pk in env_ids}
        active = self.filter(status=Peering.Status.ACTIVE).filter(
            Q(env_a_id__in=reach) | Q(env_b_id__in=reach)
        ).values_list("env_a_id", "env_b_id")
        for a, b in active:
            reach.setdefault(a, {a}).add(b)
            reach.setdefault(b, {b}).add(a)
        return {pk: tuple(sorted(reach[pk])) for pk in env_ids}


class Peering(models.Model):
    """Two Envs whose VMs may reach each other; without one, an Env's VMs reach only
    each other (and the world, as their egress policy says). It takes both owners:
    one asks, the other accepts (or one person who may manage both, or staff)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Asked, not yet accepted"
        ACTIVE = "active"
        ENDED = "ended"

    # env_a has the lower id: one row per pair, whichever side asked.
    env_a = models.ForeignKey(Env, on_delete=models.CASCADE, related_name="+")
    env_b = models.ForeignKey(Env, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    asked_for = models.ForeignKey(
        Env, on_delete=models.CASCADE, related_name="+", help_text="The side whose owner asked."
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    accepted_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    objects = PeeringQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(env_a__lt=models.F("env_b")), name="peering_ordered_pair"),
            models.UniqueConstraint(
                fields=["env_a", "env_b"], condition=~Q(status="ended"), name="peering_one_current_per_pair"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.env_a} <-> {self.env_b} [{self.status}]"

    def other(self, env: Env) -> Env:
        return self.env_b if env.pk == self.env_a_id else self.env_a


class OperationQuerySet(models.QuerySet):
    def visible_to(self, user) -> OperationQuerySet:
        if permissions.sees_others(user, "operation_view"):
            return self
        return self.filter(env__owner=user)


class Operation(models.Model):
    """One long or audited action: its progress while it runs, the record afterwards."""

    class Kind(models.TextChoices):
        ENV_CREATE = "env_create", "Create Env"
        ENV_EXTEND = "env_extend", "Extend Env"
        ENV_START = "env_start", "Start Env"
        ENV_STOP = "env_stop", "Stop Env"
        ENV_DENY_OUTGOING = "env_set_deny_outgoing", "Set outgoing traffic"
        ENV_DESTROY = "env_destroy", "Destroy Env"
        ENV_EXPIRE = "env_expire", "Expire Env"
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
        ENV_PEER = "env_peer", "Peer with an Env"
        ENV_UNPEER = "env_unpeer", "End a peering"
        VM_RECONCILE = "vm_reconcile", "Reconcile VM"
        NODE_DRIFT = "node_drift", "Drift on a node"
        WARM_FILL = "warm_fill", "Fill warm pool"
        WARM_DISCARD = "warm_discard", "Discard warm spares"
        VM_DISK_STOP = "vm_disk_stop", "Stop VM past its disk"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    DONE = (Status.SUCCEEDED, Status.FAILED)
    LIVE = (Status.QUEUED, Status.RUNNING)

    kind = models.CharField(max_length=32, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    env = models.ForeignKey(
        Env, null=True, blank=True, on_delete=models.CASCADE, related_name="operations",
        help_text="Empty only for what concerns a node alone (drift no Env owns).",
    )
    vm = models.ForeignKey(
        "vms.Vm", null=True, blank=True, on_delete=models.SET_NULL, related_name="operations"
    )
    snapshot = models.ForeignKey(
        "vms.Snapshot", null=True, blank=True, on_delete=models.SET_NULL, related_name="operations"
    )
    target = models.CharField(max_length=200, blank=True, help_text="What it acted on, kept after deletion.")
    params = models.JSONField(default=dict, blank=True)
    progress = models.PositiveSmallIntegerField(default=0)
    error_code = models.CharField(max_length=32, blank=True, choices=ErrorCode.choices())
    error_message = models.TextField(blank=True)
    log = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="operations", help_text="Who asked (an operator acting for an owner shows here).",
    )
    idempotency_key = models.CharField(max_length=128, blank=True, default="")
    # What the keyed request asked (envs.operations.request_fingerprint): the same key
    # with another request is refused rather than answered with this operation.
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The lease (envs/runner.py): who runs it, which attempt, and when that
    # worker last said it is still at it. A lease that stops being renewed is
    # taken over by the recovery pass (envs/recovery.py).
    attempt = models.PositiveSmallIntegerField(
        default=0, help_text="How many times a worker has taken it (0: not yet)."
    )
    worker = models.CharField(max_length=200, blank=True, help_text="The worker holding its lease.")
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="When its worker last renewed the lease."
    )
    dispatched_at = models.DateTimeField(
        null=True, blank=True, help_text="When a task for it was last handed to the broker."
    )
    # Whose task cluster runs it (envs/runner.dispatch): the node of its VM, or of most
    # of its Env's VMs. Empty: the site's cluster (no VM yet, or a node-less record).
    node = models.ForeignKey(
        "nodes.Node", null=True, blank=True, on_delete=models.SET_NULL, related_name="operations",
        help_text="The node whose task cluster runs it.",
    )

    objects = OperationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["requested_by", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="operation_idempotency_key_unique_per_user",
            ),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="operation_status_idx")]

    def __str__(self) -> str:
        return f"{self.kind} {self.target} [{self.status}]"

    @property
    def is_done(self) -> bool:
        return self.status in self.DONE

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE

    @property
    def vm_ids(self) -> set[int]:
        """Every VM it acts on: its own VM, and those an Env-wide action names."""
        ids = {int(pk) for pk in (self.params or {}).get("vm_ids", [])}
        if self.vm_id:
            ids.add(self.vm_id)
        return ids

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None
