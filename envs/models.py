"""Env (the seed's Env + EnvState) and Peering. The Operation record is operations.models."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models
from django.db.models import Q
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django.utils.functional import cached_property

import ttportal.lookups  # noqa: F401 (registers __among, the lookup of visible_to)
from ttportal import permissions
from ttportal.validators import validate_dns_label


class EnvQuerySet(models.QuerySet):
    def visible_to(self, user) -> EnvQuerySet:
        """The one scoping rule: staff with envs.view_env see every Env (vms.policy), everyone
        else their own and those shared with them or one of their groups (EnvMember)."""
        if permissions.sees_others(user, "env_view"):
            return self.filter(is_warm_pool=False)
        if user is None or not user.is_authenticated:
            return self.none()
        return self.filter(pk__among=self.ids_of(user))

    def ids_of(self, user) -> RawSQL:
        """The ids of `user`'s own Envs and of those shared with them, as a subquery: this
        visible_to and vms' and operations' filter by it, so their rows are found through their
        index on env_id whatever the number of other users'.

        Written once in SQL, for two measured reasons (bench/list_latency.py): a filter
        `owner OR pk IN (shared)` makes the database scan every Env, where each half of this
        UNION reads its own index; and Django compiling the same thing as nested querysets cost
        every list page about 1 ms of CPU, a fifth of the page."""
        member = EnvMember._meta
        user_groups = get_user_model().groups.through._meta.db_table
        sql = (f"SELECT id FROM {Env._meta.db_table} WHERE owner_id = %s"
               f" UNION ALL SELECT env_id FROM {member.db_table} WHERE user_id = %s"
               f" OR group_id IN (SELECT group_id FROM {user_groups} WHERE user_id = %s)")
        return RawSQL(sql, [user.pk] * 3)

    def live(self) -> EnvQuerySet:
        return self.exclude(status=Env.Status.DESTROYED)

    def reach_of(self, env_ids) -> dict[int, tuple[int, ...]]:
        """Env id -> the Envs whose VMs may reach its VMs: itself and its active peers."""
        reach = {pk: {pk} for pk in env_ids}
        active = Peering.objects.filter(status=Peering.Status.ACTIVE).filter(
            Q(env_a_id__in=reach) | Q(env_b_id__in=reach)
        ).values_list("env_a_id", "env_b_id")
        for a, b in active:
            reach.setdefault(a, {a}).add(b)
            reach.setdefault(b, {b}).add(a)
        return {pk: tuple(sorted(reach[pk])) for pk in env_ids}


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
    # Sleep when idle (envs/sleep.py): after this many minutes without a new connection on
    # its forwarded ports nor console, exec or file use, every VM is saved; None: never
    # (unless the site's TT_IDLE_SUSPEND_DEFAULT_MIN says otherwise for an Env created then).
    idle_suspend = models.PositiveIntegerField(null=True, blank=True)
    asleep_since = models.DateTimeField(null=True, blank=True, editable=False)
    # The last activity seen, and the port counters it was read from ("node/proto/port": n).
    active_at = models.DateTimeField(null=True, blank=True, editable=False)
    port_marks = models.JSONField(default=dict, null=True, blank=True, editable=False)

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

    def role_of(self, user) -> str | None:
        """`user`'s role on this Env ("owner", a member's strongest role, or None). Read anew
        each call: a removed member loses it at once (vms.policy asks it)."""
        if user is None or not user.is_authenticated or not self.pk:
            return None
        if user.pk == self.owner_id:
            return "owner"
        roles = EnvMember.objects.of_user(user).filter(env_id=self.pk).values_list("role", flat=True)
        return permissions.strongest(roles)

    def seconds_left(self, now=None) -> int:
        now = now or timezone.now()
        return max(0, int((self.end_at - now).total_seconds()))


class PeeringQuerySet(models.QuerySet):
    def of(self, env: Env) -> PeeringQuerySet:
        return self.filter(Q(env_a=env) | Q(env_b=env))

    def current(self) -> PeeringQuerySet:
        return self.exclude(status=Peering.Status.ENDED)


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


class BlueprintQuerySet(models.QuerySet):
    def visible_to(self, user) -> BlueprintQuerySet:
        """The one scoping rule of blueprints: staff with envs.view_blueprint see every one;
        everyone else their own, those shared with them or one of their groups, and the
        published ones."""
        if permissions.sees_others(user, "blueprint_view"):
            return self.all()
        if user is None or not user.is_authenticated:
            return self.none()
        seen = (Q(owner=user) | Q(published=True) | Q(shared_with_users=user)
                | Q(shared_with_groups__in=user.groups.all()))
        # The joins repeat a row shared twice: its ids, then the rows once each.
        return self.filter(pk__in=self.model.objects.filter(seen).values("pk"))


class Blueprint(models.Model):
    """An Env file saved under a name (envs/blueprints.py): launched again and again, shared
    read-only with users and groups, or published to everyone by an operator."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="blueprints")
    name = models.CharField(max_length=63, validators=[validate_dns_label])
    description = models.TextField(blank=True, default="")
    text = models.TextField(help_text="The Env file (tt.yaml), checked by the Env file parser when saved.")
    env_name = models.CharField(max_length=63, editable=False,
                                help_text="The name its file gives the Env (a launch's default).")
    shared_with_users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")
    shared_with_groups = models.ManyToManyField("auth.Group", blank=True, related_name="+")
    published = models.BooleanField(default=False, help_text="Seen (and launched) by everyone.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = BlueprintQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="blueprint_name_unique_per_owner",
                                    violation_error_message="You already have a blueprint with this name."),
        ]
        permissions = [("publish_blueprint", "Can publish blueprints to everyone")]

    def __str__(self) -> str:
        return f"{self.name} ({self.owner})"


class EnvMemberQuerySet(models.QuerySet):
    def of_user(self, user) -> EnvMemberQuerySet:
        """The memberships of `user`: theirs, and their groups' (one indexed subquery each)."""
        if user is None or user.pk is None:  # anonymous: none (user_id=None would mean IS NULL)
            return self.none()
        groups = get_user_model().groups.through.objects.filter(user_id=user.pk).values("group_id")
        return self.filter(Q(user_id=user.pk) | Q(group_id__in=groups))

    def roles_by_env(self, user, env_ids) -> dict[int, str]:
        """Env id -> `user`'s strongest role on it (their own or a group's), for a page's Envs."""
        found: dict[int, list[str]] = {}
        for env_id, role in self.of_user(user).filter(env_id__in=env_ids).values_list("env_id", "role"):
            found.setdefault(env_id, []).append(role)
        return {env_id: permissions.strongest(roles) for env_id, roles in found.items()}


class EnvMember(models.Model):
    """A user, or a Django group, granted one role on one Env by its owner (envs/sharing.py).
    The role's actions are ttportal.permissions.ROLE_ACTIONS; quotas stay the owner's."""

    class Role(models.TextChoices):
        VIEWER = permissions.VIEWER, "Viewer: sees the Env, its VMs and consoles"
        OPERATOR = permissions.OPERATOR, "Operator: also starts, stops, snapshots, enters its VMs"
        ADMIN = permissions.ADMIN, "Admin: also adds and destroys VMs, shares, destroys the Env"

    env = models.ForeignKey(Env, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                             related_name="env_memberships")
    group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.CASCADE,
                              related_name="env_memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    granted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    granted_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = EnvMemberQuerySet.as_manager()

    class Meta:
        ordering = ["env_id", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(user__isnull=False, group__isnull=True)
                           | Q(user__isnull=True, group__isnull=False)),
                name="envmember_user_xor_group",
                violation_error_message="A member is a user or a group, not both.",
            ),
            models.UniqueConstraint(fields=["env", "user"], condition=Q(user__isnull=False),
                                    name="envmember_one_per_user",
                                    violation_error_message="This user is already a member of this Env."),
            models.UniqueConstraint(fields=["env", "group"], condition=Q(group__isnull=False),
                                    name="envmember_one_per_group",
                                    violation_error_message="This group is already a member of this Env."),
        ]
        # visible_to's subquery reads memberships by user or group, then their Envs.
        indexes = [
            models.Index(fields=["user", "env"], name="envmember_user_idx"),
            models.Index(fields=["group", "env"], name="envmember_group_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.who} {self.role} on {self.env_id}"

    @property
    def who(self) -> str:
        """The member as the pages name it: a username, or @group."""
        return self.user.get_username() if self.user_id else f"@{self.group.name}"


# One's role on an Env, as the API shows it (EnvSerializer.role): its owner's, or a member's.
ENV_ROLES = ["owner", *EnvMember.Role.values]
