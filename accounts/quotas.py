"""Per-user quotas: what each quota is, a user's limits, and the checks the services make.

A user's limit for each quota is resolved field by field:

1. their own override (accounts.UserQuota), if that field is set;
2. else the most generous (the highest) of their groups' overrides (accounts.GroupQuota)
   that set it; a group may restrict as well as allow more than the default;
3. else the settings' default (TT_QUOTA_*).

What is in use is counted where Envs and VMs are (vms/usage.py, which this module never
imports: the services pass the counts in, and `report` asks the counter vms registers
with `register_usage`). The services check a quota only where a
request adds to it, under a lock on the owner's user row (`lock`) taken before counting,
so two concurrent requests of one owner are counted one after the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import CharField, F, Value

from accounts.models import GroupQuota, UserQuota
from ttportal import permissions
from ttportal.errors import Forbidden, QuotaExceeded


@dataclass(frozen=True)
class Quota:
    name: str  # as the API, the override models and Usage name it
    label: str  # as people read it
    unit: str  # "" (a count), "MiB" or "s"
    setting: str  # its default's setting (and environment variable)


QUOTAS: tuple[Quota, ...] = (
    Quota("envs", "live Envs", "", "TT_QUOTA_ENVS"),
    Quota("vms", "live VMs", "", "TT_QUOTA_VMS"),
    Quota("vcpus", "vCPUs", "", "TT_QUOTA_VCPUS"),
    Quota("mem_mb", "memory", "MiB", "TT_QUOTA_MEM_MB"),
    Quota("disk_mb", "disk", "MiB", "TT_QUOTA_DISK_MB"),
    Quota("snapshots", "snapshots", "", "TT_QUOTA_SNAPSHOTS"),
    Quota("ports", "forwarded ports", "", "TT_QUOTA_PORTS"),
    Quota("lifetime", "longest Env lifetime", "s", "TT_QUOTA_MAX_LIFETIME"),
    Quota("extension", "longest single extension", "s", "TT_QUOTA_MAX_EXTENSION"),
)
BY_NAME = {quota.name: quota for quota in QUOTAS}
NAMES = tuple(BY_NAME)
# The quotas on what a user holds at once (the others bound one Env's dates).
COUNTED = ("envs", "vms", "vcpus", "mem_mb", "disk_mb", "snapshots", "ports")


@dataclass(frozen=True)
class Usage:
    """What a user holds (live Envs, live VMs and their resources, those VMs' snapshots and
    forwarded public ports), or what one request would add to it."""

    envs: int = 0
    vms: int = 0
    vcpus: int = 0
    mem_mb: int = 0
    disk_mb: int = 0
    snapshots: int = 0
    ports: int = 0

    @classmethod
    def of_vms(cls, vms, *, envs: int = 0, ports: int = 0) -> Usage:
        """What new VMs (anything with cpu_num, mem_mb and disk_mb) and their `ports`
        forwarded ports add."""
        vms = list(vms)
        return cls(envs=envs, vms=len(vms), vcpus=sum(vm.cpu_num for vm in vms),
                   mem_mb=sum(vm.mem_mb for vm in vms), disk_mb=sum(vm.disk_mb for vm in vms), ports=ports)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Limits:
    """A user's limit for each quota, and where each came from ("user", "group <name>" or
    "default")."""

    values: dict[str, int]
    sources: dict[str, str]

    def __getitem__(self, name: str) -> int:
        return self.values[name]


def defaults() -> dict[str, int]:
    """The settings' limits (read per call, so a deployment's or a test's values apply)."""
    return {quota.name: getattr(settings, quota.setting) for quota in QUOTAS}


def limits_for(user) -> Limits:
    """`user`'s limits, by the rule in this module's docstring. One query."""
    user_rows = UserQuota.objects.filter(user_id=user.pk).values(
        *NAMES, kind=Value("user", output_field=CharField()), group_name=Value("", output_field=CharField()),
    )
    group_rows = GroupQuota.objects.filter(group__user=user.pk).values(
        *NAMES, kind=Value("group", output_field=CharField()), group_name=F("group__name"),
    )
    rows = list(user_rows.order_by().union(group_rows.order_by(), all=True))
    own = next((row for row in rows if row["kind"] == "user"), None)
    groups = sorted((row for row in rows if row["kind"] == "group"), key=lambda row: row["group_name"])
    values, sources = defaults(), dict.fromkeys(NAMES, "default")
    for name in NAMES:
        if own is not None and own[name] is not None:
            values[name], sources[name] = own[name], "user"
            continue
        setting = [row for row in groups if row[name] is not None]
        if setting:
            best = max(setting, key=lambda row: row[name])  # the first by name among equals
            values[name], sources[name] = best[name], f"group {best['group_name']}"
    return Limits(values=values, sources=sources)


# --- what the services call --------------------------------------------------------------


def enforced(*, by, ignore_quota: bool) -> bool:
    """Whether the owner's quota binds this request. Staff acting for a user are bound by
    that user's quota too, unless they say otherwise (`ignore_quota`, which only staff may
    say: the portal and the API never offer it)."""
    if not ignore_quota:
        return True
    if by is None or not permissions.may(by, "ignore_quota"):
        raise Forbidden(f"only staff with the permission {permissions.permission_for('ignore_quota')} "
                        "may ignore the owner's quota")
    return False


def lock(owner) -> None:
    """Lock the owner's user row until the end of the caller's transaction: requests that
    add to one owner's use count it one at a time. Taken before counting, and before any
    Env row lock (one order everywhere, so no deadlock). On SQLite select_for_update does
    nothing, but every write transaction there starts by taking the database's write lock
    (settings: transaction_mode IMMEDIATE), which serialises them just the same."""
    get_user_model().objects.select_for_update().filter(pk=owner.pk).values_list("pk").first()


def amount(value: int, unit: str) -> str:
    """512 and "MiB" -> "512 MiB"; a count stays bare."""
    return f"{value} {unit}" if unit else str(value)


def check_counts(owner, limits: Limits, used: Usage, adds: Usage) -> None:
    """Refuse when what the request adds would take any quota it adds to past its limit
    (a quota it does not add to is not checked: a user over a lowered limit may still
    do what uses nothing more of it)."""
    for name in COUNTED:
        more, now, limit = getattr(adds, name), getattr(used, name), limits[name]
        if more > 0 and now + more > limit:
            quota = BY_NAME[name]
            raise QuotaExceeded(
                f"quota exceeded: {owner.get_username()} may have at most {amount(limit, quota.unit)} of "
                f"{quota.label}; {amount(now, quota.unit)} in use, and this request adds "
                f"{amount(more, quota.unit)}",
                quota=name, limit=limit, used=now, requested=more,
            )


def check_lifetime(owner, limits: Limits, *, current: int, wanted: int) -> None:
    """An Env that would live `wanted` seconds from its start (it lives `current` now, 0 for
    a new one). Only a longer life is checked."""
    limit = limits["lifetime"]
    if wanted > current and wanted > limit:
        raise QuotaExceeded(
            f"quota exceeded: {owner.get_username()}'s Envs may live at most {limit} s from their start; "
            f"this one would live {wanted} s",
            quota="lifetime", limit=limit, used=current, requested=wanted - current,
        )


def check_extension(owner, limits: Limits, seconds: int) -> None:
    """One extension moving an Env's end `seconds` later (from its current end, or from now
    once that has passed)."""
    limit = limits["extension"]
    if seconds > limit:
        raise QuotaExceeded(
            f"quota exceeded: {owner.get_username()} may extend an Env by at most {limit} s at a time; "
            f"this request extends it by {seconds} s",
            quota="extension", limit=limit, used=0, requested=seconds,
        )


# --- what the portal, the API and the admin show -------------------------------------------

# The owner's use, counted by vms (vms/usage.py: usage_of), which sits above accounts and
# registers it in its AppConfig.ready(), as apps register their /metrics collectors.
_count_usage: Callable[..., Usage] | None = None


def register_usage(count: Callable[..., Usage]) -> None:
    """Set what counts an owner's use (`count(owner) -> Usage`). Once per process."""
    global _count_usage
    _count_usage = count


@dataclass(frozen=True)
class QuotaLine:
    name: str
    label: str
    unit: str
    limit: int
    used: int | None  # None: lifetime and extension bound each Env, nothing is summed
    source: str

    @property
    def full(self) -> bool:
        return self.used is not None and self.used >= self.limit


def report(owner) -> list[QuotaLine]:
    """Each quota of `owner`: its limit, what is in use and where the limit comes from.
    Two queries (the limits, the use)."""
    limits, used = limits_for(owner), _count_usage(owner).as_dict()
    return [
        QuotaLine(name=q.name, label=q.label, unit=q.unit, limit=limits[q.name], used=used.get(q.name),
                  source=limits.sources[q.name])
        for q in QUOTAS
    ]
