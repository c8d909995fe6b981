"""What an owner uses against their quota (accounts/quotas.py), counted where Envs, VMs and
snapshots are, and the one admission step every service that adds to it takes. accounts
shows the use with the limits (accounts.quotas.report) through the counter vms registers
(vms/apps.py: quotas.register_usage(usage_of)).

"In use" is what is live: Envs not destroyed, VMs not destroyed (live_vms(): a stopped
VM, or one in error, still holds its node's resources) and the snapshots of those VMs.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, IntegerField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from accounts import quotas
from accounts.quotas import Limits, Usage
from vms.models import PortMapping, Snapshot, Vm, env_model, live_vms


def _per_owner(queryset, owner_field: str, aggregate) -> Coalesce:
    """One number of the owner's rows, as a subquery of the user's row (0 when none)."""
    rows = (queryset.filter(**{owner_field: OuterRef("pk")}).order_by().values(owner_field)
            .annotate(total=aggregate).values("total")[:1])
    return Coalesce(Subquery(rows, output_field=IntegerField()), Value(0))


def _usage_query(names: tuple[str, ...] | None):
    """The user rows annotated with their use (of the quotas `names` only; None: all):
    prefixed names, the user model has relations named envs (and maybe more)."""
    vms = Vm.objects.filter(live_vms(""))
    counts = {
        "use_envs": _per_owner(env_model().objects.live(), "owner", Count("pk")),
        "use_vms": _per_owner(vms, "env__owner", Count("pk")),
        "use_vcpus": _per_owner(vms, "env__owner", Sum("cpu_num")),
        "use_mem_mb": _per_owner(vms, "env__owner", Sum("mem_mb")),
        "use_disk_mb": _per_owner(vms, "env__owner", Sum("disk_mb")),
        "use_snapshots": _per_owner(Snapshot.objects.filter(live_vms("vm")), "vm__env__owner", Count("pk")),
        # A destroyed VM's ports are deleted with it, but a VM being destroyed holds them still.
        "use_ports": _per_owner(PortMapping.objects.filter(live_vms("vm")), "vm__env__owner", Count("pk")),
    }
    if names is not None:
        counts = {key: value for key, value in counts.items() if key.removeprefix("use_") in names}
    return get_user_model().objects.values(**counts) if counts else None


_OWNER = -2_147_483_000  # stands for the owner's pk in the compiled statement (no pk is negative)
_compiled: dict[tuple, tuple[str, tuple, int] | None] = {}


def _statement(names: tuple[str, ...] | None) -> tuple[str, tuple, int] | None:
    """The usage query's SQL and parameters, and where the owner's pk goes in them: built
    and compiled by the ORM once per process and database, not per call. Seven counting
    subqueries took 4 ms to build and compile for a 0.3 ms query, on every page that shows
    the quota and every request checked against it. A string and a tuple: safe to share
    between threads."""
    key = (connection.alias, connection.vendor, names)
    if key not in _compiled:
        query = _usage_query(names)
        if query is None:
            _compiled[key] = None
        else:
            sql, params = query.filter(pk=_OWNER).query.sql_with_params()
            _compiled[key] = (sql, tuple(params), params.index(_OWNER))
    return _compiled[key]


def usage_of(owner, names: tuple[str, ...] | None = None) -> Usage:
    """What `owner` holds now (of the quotas `names` only, the others left 0). One query."""
    statement = _statement(names)
    if statement is None:
        return Usage()
    sql, params, at = statement
    with connection.cursor() as cursor:
        cursor.execute(sql, (*params[:at], owner.pk, *params[at + 1:]))
        row = cursor.fetchone()
        columns = [column[0] for column in cursor.description]
    if row is None:  # no such user
        return Usage()
    return Usage(**{name.removeprefix("use_"): value for name, value in zip(columns, row, strict=True)})


def admit(owner, *, by, ignore_quota: bool = False, lock: bool = True) -> Limits | None:
    """The first step of a service that adds to `owner`'s use: the owner's row locked (with
    `lock`, before anything is counted and before any Env row is locked) and their limits.
    None when staff said to ignore the owner's quota (refused for anyone else)."""
    if not quotas.enforced(by=by, ignore_quota=ignore_quota):
        return None
    if lock:
        quotas.lock(owner)
    return quotas.limits_for(owner)


def check_adds(owner, limits: Limits | None, adds: Usage, *, used: Usage | None = None) -> None:
    """Refuse (QuotaExceeded) when `adds` would take the owner past a limit; `limits` is
    what `admit` returned (None: not enforced). `used`: the owner's use, counted by the
    caller before it wrote anything (else counted now)."""
    if limits is not None:
        if used is None:  # only what the request adds to is checked, so only that is counted
            used = usage_of(owner, tuple(name for name, more in adds.as_dict().items() if more > 0))
        quotas.check_counts(owner, limits, used, adds)
