"""Peering: two Envs whose VMs may reach each other. Every interface calls these.

Isolation is per Env: without a peering, a VM reaches only the VMs of its own
Env (engines/network/firewall.py). A peering takes both owners: the owner of
one Env asks (naming the other as `owner/name`, which its owner shares), the
owner of the other accepts by asking back; one person who may manage both
(staff, or the owner of both) peers them at once. Either owner ends it. How often one user may ask
(peer and unpeer together) is bound (TT_RATE_PEER).

Starting or ending a peering rewrites the reach of every VM of both Envs, as an
operation (envs/steps.py), with each VM's network claimed meanwhile.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone

from audit import details
from audit.recording import audited
from envs.kinds import EnvKind
from envs.models import Env, Peering
from operations.models import Operation
from operations.recording import idempotent, record
from ttportal import limits, ratelimit
from ttportal.errors import ConflictingInput, IllegalState, InvalidInput
from vms import policy, state
from vms.models import Vm


def find_env(ref, *, field: str = "env") -> Env:
    """A live Env named `owner/name` (how one owner names another's Env)."""
    if not limits.matches(limits.ENV_REF_PATTERN, ref) or len(ref) > limits.ENV_REF_MAX:
        raise InvalidInput(field, limits.ENV_REF_RULE)
    username, name = ref.split("/")
    owner = get_user_model().objects.filter(username=username, is_active=True).first()
    env = Env.objects.live().filter(owner=owner, name=name).first() if owner else None
    if env is None:
        raise ConflictingInput(field, f"no live Env {username}/{name}")
    return env


def peer_of(env: Env, other_id: int) -> Env | None:
    """The Env `other_id`, if it is peered with `env` or asked (one the owner of `env`
    may name by id: it shows on their Env page)."""
    current = Peering.objects.of(env).current()
    return (Env.objects.filter(pk=other_id).select_related("owner")
            .filter(Q(pk__in=current.values("env_a")) | Q(pk__in=current.values("env_b"))).first())


def _pair(env: Env, other: Env) -> tuple[Env, Env]:
    """Both Envs locked, in id order (two requests on one pair never deadlock)."""
    a, b = sorted((env.pk, other.pk))
    locked = {e.pk: e for e in Env.objects.select_for_update().filter(pk__in=(a, b)).order_by("pk")}
    for e in locked.values():
        policy.check_live(e)
    return locked[a], locked[b]


def _rewire(kind: str, peering: Peering, env: Env, *, by, idempotency_key: str, previous: str) -> Operation:
    """Claim both Envs' VMs' networks and record the operation that rewrites their reach."""
    vms = list(Vm.objects.live().filter(env__in=(peering.env_a_id, peering.env_b_id))
               .exclude(status=Vm.Status.CREATING).order_by("pk"))
    for vm in vms:
        state.claim_network(vm)  # the whole change or nothing (the transaction rolls back)
    other = peering.other(env)
    return record(kind, env=env, by=by, idempotency_key=idempotency_key,
                  target=f"{env.name} <-> {other.owner.get_username()}/{other.name}",
                  params={"peering": peering.pk, "pair": [peering.env_a_id, peering.env_b_id],
                          "previous": previous, "vm_ids": [vm.pk for vm in vms]})


@audited("peering.create", detail=details.other_env)
@idempotent
def env_peer(*, env: Env, other: Env, by, idempotency_key: str = "") -> Operation:
    """Ask for (or accept, or make) a peering of `env` with `other`."""
    policy.check_can_manage(by, env, "env_peer")
    if other.pk == env.pk:
        raise InvalidInput("env", "an Env's VMs always reach each other; name another Env")
    a, b = _pair(env, other)
    env, other = (a, b) if env.pk == a.pk else (b, a)
    current = Peering.objects.filter(env_a=a, env_b=b).current().first()
    now = timezone.now()
    if current is not None and current.status == Peering.Status.ACTIVE:
        raise IllegalState(f"{env.name} is peered with {other.owner}/{other.name} already")
    both = policy.may_manage(by, other, "env_peer")
    if current is not None and current.asked_for_id == env.pk and not both:
        raise IllegalState(f"asked already: the owner of {other.owner}/{other.name} has to accept")
    ratelimit.take("peer", user=by)
    if current is None and not both:
        peering = Peering.objects.create(env_a=a, env_b=b, asked_for=env, requested_by=by)
        return record(EnvKind.ENV_PEER, env=env, by=by, idempotency_key=idempotency_key, run=False,
                      status=Operation.Status.SUCCEEDED, target=f"{env.name} -> {other.owner}/{other.name}",
                      params={"peering": peering.pk, "asked": True})
    peering = current or Peering(env_a=a, env_b=b, asked_for=env, requested_by=by, created_at=now)
    previous = peering.status if current else Peering.Status.ENDED
    peering.status, peering.accepted_by, peering.accepted_at = Peering.Status.ACTIVE, by, now
    peering.save()
    return _rewire(EnvKind.ENV_PEER, peering, env, by=by, idempotency_key=idempotency_key, previous=previous)


@audited("peering.end", detail=details.other_env)
@idempotent
def env_unpeer(*, env: Env, other: Env, by, idempotency_key: str = "") -> Operation:
    """End (or decline, or withdraw) the peering of `env` with `other`: either owner may."""
    policy.check_can_manage(by, env, "env_unpeer")
    a, b = _pair(env, other)
    env = a if env.pk == a.pk else b
    peering = Peering.objects.filter(env_a=a, env_b=b).current().first()
    if peering is None:
        raise IllegalState(f"{env.name} is not peered with {other.owner}/{other.name}")
    ratelimit.take("peer", user=by)
    previous = peering.status
    peering.status, peering.ended_at = Peering.Status.ENDED, timezone.now()
    peering.save(update_fields=["status", "ended_at"])
    if previous == Peering.Status.PENDING:
        return record(EnvKind.ENV_UNPEER, env=env, by=by, idempotency_key=idempotency_key, run=False,
                      status=Operation.Status.SUCCEEDED, target=f"{env.name} -/- {other.owner}/{other.name}",
                      params={"peering": peering.pk, "asked": True})
    return _rewire(EnvKind.ENV_UNPEER, peering, env, by=by, idempotency_key=idempotency_key,
                   previous=previous)


def peerings_of(env: Env) -> dict[str, list[Env]]:
    """What an Env page shows: active peers, requests to accept, requests made."""
    return peerings_of_many([env])[env.pk]


def peerings_of_many(envs) -> dict[int, dict[str, list[Env]]]:
    """peerings_of for each of `envs` (API lists): the peerings in one query, and the Envs
    at their other ends with their owners in a second, only when there is a peering.

    One query joining each peering to both Envs and both owners cost an Env page 1.6 ms
    of Python (four joins, 50 columns, ten instances per peering) and PostgreSQL its
    planning, for a page whose Env most often has no peering at all."""
    shown = {env.pk: {"active": [], "incoming": [], "outgoing": []} for env in envs}
    current = sorted(  # newest first, as Peering's ordering
        Peering.objects.current().filter(Q(env_a__in=shown) | Q(env_b__in=shown)).order_by()
        .values_list("created_at", "pk", "env_a_id", "env_b_id", "status", "asked_for_id"), reverse=True)
    ends = {env_id for _, _, a, b, _, _ in current for env_id in (a, b)}
    other_envs = Env.objects.select_related("owner").in_bulk(ends) if ends else {}
    for _, _, env_a_id, env_b_id, status, asked_for_id in current:
        for env_id, other in ((env_a_id, other_envs[env_b_id]), (env_b_id, other_envs[env_a_id])):
            if env_id not in shown:
                continue
            if status == Peering.Status.ACTIVE:
                shown[env_id]["active"].append(other)
            elif asked_for_id == env_id:
                shown[env_id]["outgoing"].append(other)
            else:
                shown[env_id]["incoming"].append(other)
    return shown


def end_peerings_of(env: Env) -> list[Env]:
    """A destroyed Env's peerings end; returns the Envs that were its active peers."""
    ended = []
    for peering in Peering.objects.of(env).current().select_related("env_a", "env_b"):
        if peering.status == Peering.Status.ACTIVE:
            ended.append(peering.other(env))
        Peering.objects.filter(pk=peering.pk).update(status=Peering.Status.ENDED, ended_at=timezone.now())
    return ended
