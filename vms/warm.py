"""Warm start: spare VMs booted and saved ahead of time, taken by creates.

A `WarmPool` (per node and template) keeps `size` spares of each VM size it covers.
A spare is an ordinary Vm row in the pool's own Env (owned by the site, never
expired, shown in the admin only), made by a `warm_fill` operation: created with
its own MAC and IP from the allocator, booted (so its guest has its own boot,
keys and machine identity), and once the guest says it is up, suspended (libvirt
managed save). It holds its addresses, and its CPU and memory count against the
node's capacity like any VM.

A create that asks for a VM of the pool's template and size on a node the Env may
use takes a spare instead of inserting a row: one conditional UPDATE moves the row
into the new Env with the requested name (exactly one create wins it; placement's
lock already serialises the candidates). The row keeps its pk, hence its engine
name `tt-<node>-<pk>`, its MAC and its IP: the domain and the save image stay what
they are, which is all libvirt's restore accepts (it refuses another name, UUID or
MAC). The create operation then rewires the node's firewall for the new Env and
ports and restores the spare (in parallel for several); a spare that will not
restore is discarded on the node and the same row boots cold.

Spares never leak: they are rows, so reconciliation, recovery, destroy and the
fault-injection rules cover them as any VM; `tend` (every minute, after a take, after
an admin change) discards spares that are stale (the template changed), in excess,
or in any state but suspended, and fills what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import uuid as uuidlib
from dataclasses import asdict
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.recording import audited
from engines.specs import Feature
from nodes.registry import driver_class
from operations import registry
from operations.models import Operation
from operations.recording import record
from ttportal import permissions
from ttportal.errors import ConflictingInput, IllegalState, InvalidInput
from vms import allocation, placement, state
from vms.kinds import VmKind
from vms.models import CLOUD_INIT, Vm, VmTemplate, WarmPool, env_model
from vms.state import VmAction

log = logging.getLogger(__name__)

# The account that owns every pool's Env: inactive, no password, never a person.
SITE_USER = "tt-warm-pool"
# A pool's Env is never expired: its end is this far away and the sweep skips it anyway.
POOL_ENV_LIFETIME = timedelta(days=365 * 100)


# --- what a spare is made from ----------------------------------------------------------


def warm_key_of(template: VmTemplate, keep: str) -> str:
    """What a spare was booted from and how it waits: a change to the template (image,
    kernel, command line, features) or to the pool's `keep` makes every spare of it stale."""
    spec = asdict(template.to_spec())
    data = {"pk": template.pk, "spec": spec, "features": sorted(template.features or []), "keep": keep}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


SIZE_RE = re.compile(r"^\s*(\d{1,3})\s*x\s*(\d{1,7})\s*(?:/\s*(\d{1,8}))?\s*$")
SIZE_RULE = 'one size per line, "<CPUs>x<memory MiB>" or "<CPUs>x<memory MiB>/<disk MiB>", e.g. 1x128'


def size_label(size: dict) -> str:
    disk = f"/{size['disk_mb']}" if size.get("disk_mb") else ""
    return f"{size['cpu_num']}x{size['mem_mb']}{disk}"


def parse_sizes(text: str, template: VmTemplate | None, field: str = "vm_sizes") -> list[dict]:
    """The admin's lines into [{"cpu_num", "mem_mb", "disk_mb"}]; disk 0 = the template's."""
    sizes: list[dict] = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        match = SIZE_RE.match(line)
        if match is None:
            raise InvalidInput(field, f"{line.strip()!r}: {SIZE_RULE}")
        cpu, mem, disk = int(match[1]), int(match[2]), int(match[3] or 0)
        size = {"cpu_num": cpu, "mem_mb": mem, "disk_mb": disk}
        check_size(size, template, field)
        if size not in sizes:
            sizes.append(size)
    if len(sizes) > 8:
        raise InvalidInput(field, "at most 8 sizes per pool")
    return sizes


def check_size(size: dict, template: VmTemplate | None, field: str) -> None:
    from ttportal import limits

    label = size_label(size)
    if not 1 <= size["cpu_num"] <= limits.CPU_MAX:
        raise InvalidInput(field, f"{label}: CPUs {limits.between(1, limits.CPU_MAX)}")
    if not 16 <= size["mem_mb"] <= limits.MEM_MAX_MB:
        raise InvalidInput(field, f"{label}: memory {limits.between(16, limits.MEM_MAX_MB, 'MiB')}")
    if size["disk_mb"] > limits.DISK_MAX_MB:
        raise InvalidInput(field, f"{label}: disk {limits.between(1, limits.DISK_MAX_MB, 'MiB')}")
    if template is None:
        return
    if size["cpu_num"] < template.min_cpu or size["mem_mb"] < template.min_mem_mb:
        raise ConflictingInput(field, f"{label}: below template {template.name}'s minimum "
                                      f"({template.min_cpu} CPU, {template.min_mem_mb} MiB)")
    if size["disk_mb"] and size["disk_mb"] < template.min_disk_mb:
        raise ConflictingInput(field, f"{label}: disk below the template's size ({template.min_disk_mb} MiB)")


def disk_of(size: dict, template: VmTemplate) -> int:
    return size["disk_mb"] or template.min_disk_mb


# --- pools: what the admin sets ------------------------------------------------------------


def check_pool(node, template: VmTemplate) -> None:
    """A pool needs an engine that saves memory, a template it runs, and a template whose
    guest needs nothing per VM at first boot (a restored guest booted with the pool's)."""
    if Feature.SUSPEND not in driver_class(node.kind).features:
        raise ConflictingInput("node", f"the {node.kind} engine of node {node.name} cannot save a VM's "
                                       "memory, which a warm spare is")
    if not template.supports(node.kind):
        raise ConflictingInput("template", f"template {template.name} does not run on {node.kind}")
    if CLOUD_INIT in (template.features or []):
        raise ConflictingInput("template", f"template {template.name} runs cloud-init: each VM's first "
                                           "boot takes its owner's SSH keys, which a spare booted ahead "
                                           "cannot have")


def _site_user():
    user, made = get_user_model().objects.get_or_create(
        username=SITE_USER, defaults={"is_active": False, "first_name": "Warm pools"}
    )
    if made:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def _new_pool_env(pool: WarmPool):
    """The pool's own Env, where its spares live until a create adopts one.

    Made here, in vms, through the relation WarmPool.env ("envs.Env"), not by envs: a
    pool's Env is a detail of the pool (the site's, hidden, never expired: is_warm_pool),
    and the code that fills pools and hands spares to creates (placement, vms.services)
    is in vms. Moving pools up into envs, or into an app above it, would make vms' create
    call up to take a spare. See docs/architecture.md."""
    now = timezone.now()
    return env_model().objects.create(
        owner=_site_user(), name=f"warm-{pool.node.pk}-{pool.template.pk}", start_at=now,
        end_at=now + POOL_ENV_LIFETIME, is_warm_pool=True,
    )


@audited("warm_pool.save")
def pool_save(*, pool: WarmPool, by) -> WarmPool:
    """Create or change a pool (the admin's form has validated its fields); its spares
    follow on commit (tend)."""
    permissions.check_staff(by, "warm_pool_save")
    check_pool(pool.node, pool.template)
    for size in pool.vm_sizes:
        check_size(size, pool.template, "vm_sizes")
    with transaction.atomic():
        if pool.env_id is None:
            pool.env = _new_pool_env(pool)
        pool.save()
        transaction.on_commit(lambda: enqueue_tend(pool.pk))
    return pool


@audited("warm_pool.delete")
def pool_delete(*, pool: WarmPool, by) -> None:
    """Remove a pool that holds no live spare (switch it off first: tend discards them)."""
    permissions.check_staff(by, "warm_pool_delete")
    with transaction.atomic():
        pool = WarmPool.objects.select_for_update().get(pk=pool.pk)
        if pool.spares.live().exists():
            raise IllegalState(f"warm pool {pool} still holds spares: switch it off, and delete it once "
                               "they are discarded")
        env = pool.env
        # Spare rows destroyed long ago keep their Env, which the pool's deletion ends.
        Vm.objects.filter(warm_pool=pool).update(warm_pool=None)
        pool.delete()
        type(env).objects.filter(pk=env.pk).update(status=env.Status.DESTROYED, destroyed_at=timezone.now())


def template_changed(template: VmTemplate) -> None:
    """A template was edited: its pools discard the spares made from the old one."""
    for pk in WarmPool.objects.filter(template=template).values_list("pk", flat=True):
        transaction.on_commit(lambda pk=pk: enqueue_tend(pk))


# --- creates take spares ----------------------------------------------------------------


def spare_for(placer: placement.Placer, ask: placement.Ask, clean, taken: set[int]) -> Vm | None:
    """A ready spare for this new VM on a node the request may use, counted by `placer`
    (its ports; its CPU and memory are counted already), or None (boot it cold)."""
    template = clean.template
    if clean.user_data or CLOUD_INIT in (template.features or []):
        return None
    # Under placement's lock first: the spares are then read as concurrent creates
    # (serialised by it) left them, each seeing what the one before took.
    placer.nodes()
    spares = (
        Vm.objects.filter(
            warm_pool__enabled=True, warm_pool__template=template, status=Vm.Status.SUSPENDED,
            cpu_num=clean.cpu_num, mem_mb=clean.mem_mb, disk_mb=clean.disk_mb,
            warm_key__in=[warm_key_of(template, keep) for keep in WarmPool.Keep.values],
        )
        .exclude(pk__in=taken)
        .select_related("node", "warm_pool")
        .order_by("pk")
    )
    by_node: dict[int, Vm] = {}
    for spare in spares[:64]:  # the oldest current spare of each node
        if spare.warm_key == warm_key_of(template, spare.warm_pool.keep):
            by_node.setdefault(spare.node_id, spare)
    node = placer.place_on_spare(ask, {spare.node for spare in by_node.values()})
    return by_node[node.pk] if node is not None else None


def adopt(spare: Vm, *, env, clean) -> Vm | None:
    """Move the spare into `env` as the VM `clean` asks for (status starting: the create
    operation restores it). None when another create took it first."""
    now = timezone.now()
    uuid = spare.uuid if spare.uuid else str(uuidlib.uuid4())
    node = spare.node
    addr = spare.ip if clean.net_kind == Vm.NetKind.FLAT else node.public_host
    won = Vm.objects.filter(pk=spare.pk, warm_pool__isnull=False, status=Vm.Status.SUSPENDED).update(
        env=env, name=clean.name, status=Vm.Status.STARTING, warm_pool=None, start_kind=Vm.StartKind.WARM,
        net_kind=clean.net_kind, addr=addr, keep_image=clean.keep_image, rand_uuid=clean.rand_uuid,
        uuid=uuid, ssh_keys=[], user_data="", created_at=now, net_busy=False,
    )
    if not won:
        return None
    return Vm.objects.select_related("node", "template", "env").get(pk=spare.pk)


# --- tending the pools ----------------------------------------------------------------------


def after_operation(operation_id: int, status: str) -> None:
    """The runner's finish hook: a create that may have taken spares has the pools of its
    VMs' nodes and templates refilled. After the create, not at the take: a fill boots
    guests, which would compete with the restores for the node's CPUs."""
    creates = registry.kinds_tagged(registry.CREATES_VMS)
    op = Operation.objects.filter(pk=operation_id, kind__in=creates).first()
    if op is None:
        return
    pairs = set(Vm.objects.filter(pk__in=op.vm_ids).values_list("node_id", "template_id"))
    if not pairs:
        return
    matching = Q()
    for node_id, template_id in pairs:
        matching |= Q(node_id=node_id, template_id=template_id)
    for pk in WarmPool.objects.filter(matching).values_list("pk", flat=True):
        enqueue_tend(pk)



def enqueue_tend(pool_id: int) -> None:
    """On the site's queue; never fails its caller (the minute's sweep tends every pool)."""
    from django_q.tasks import async_task

    try:
        async_task("vms.tasks.warm_tend", pool_id, task_name=f"warm-tend-{pool_id}",
                   cluster=settings.Q_CLUSTER["name"], sync=bool(settings.Q_CLUSTER.get("sync")))
    except Exception:
        log.exception("could not enqueue tending warm pool %s; the minute's sweep will", pool_id)


def tend_all_pools() -> list[str]:
    return [tend_pool(pk) for pk in WarmPool.objects.order_by("pk").values_list("pk", flat=True)]


def _blocked(pool: WarmPool) -> str:
    """Why the pool may hold no spare now ("" when it may)."""
    node, template = pool.node, pool.template
    if not pool.enabled:
        return "switched off"
    if not pool.size or not pool.vm_sizes:
        return "no spares asked for"
    if not node.enabled or node.drained:
        return f"node {node.name} is {'disabled' if not node.enabled else 'drained'}"
    if not template.enabled:
        return f"template {template.name} is disabled"
    try:
        check_pool(node, template)
    except ConflictingInput as exc:
        return exc.message
    return ""


def tend_pool(pool_id: int) -> str:
    """Discard what the pool must not hold, then fill what it lacks. One pool at a time
    (its row locked); says what it did."""
    with transaction.atomic():
        pool = WarmPool.objects.select_for_update().select_related("node", "template", "env").filter(
            pk=pool_id).first()
        if pool is None:
            return f"pool {pool_id}: gone"
        if pool.node.down_since is not None:
            return f"{pool}: node down, nothing done"
        blocked = _blocked(pool)
        key = warm_key_of(pool.template, pool.keep)
        wanted = {} if blocked else {
            (s["cpu_num"], s["mem_mb"], disk_of(s, pool.template)): pool.size for s in pool.vm_sizes
        }
        spares = list(pool.spares.live().order_by("pk"))
        discard: list[Vm] = []
        counted: dict[tuple, int] = {}
        for spare in spares:
            shape = (spare.cpu_num, spare.mem_mb, spare.disk_mb)
            if spare.status in state.TRANSIENT:
                if spare.status != Vm.Status.DESTROYING:
                    counted[shape] = counted.get(shape, 0) + 1  # an operation holds it: filling
                continue
            keep = (spare.status == Vm.Status.SUSPENDED and spare.warm_key == key
                    and counted.get(shape, 0) < wanted.get(shape, 0))
            if keep:
                counted[shape] = counted.get(shape, 0) + 1
            else:
                discard.append(spare)
        said = [_discard(pool, discard)] if discard else []
        missing = [shape for shape, n in wanted.items() for _ in range(n - counted.get(shape, 0))]
        if missing:
            said.append(_fill(pool, missing, key))
        return f"{pool}: " + ("; ".join(said) or (blocked or "full"))


def _discard(pool: WarmPool, spares: list[Vm]) -> str:
    ids = []
    for spare in spares:
        try:
            state.claim(spare, VmAction.DESTROY)
        except IllegalState:
            continue
        ids.append(spare.pk)
    if not ids:
        return "nothing to discard"
    record(VmKind.WARM_DISCARD, env=pool.env, by=None, target=f"warm pool {pool}",
           params={"vm_ids": ids, "pool": pool.pk})
    return f"discarding {len(ids)}"


def _fill(pool: WarmPool, shapes: list[tuple[int, int, int]], key: str) -> str:
    """Insert the missing spares (the node's capacity permitting) and one operation to boot
    and save them."""
    template, node = pool.template, pool.node
    placer = placement.Placer(only=[node.pk])
    made: list[Vm] = []
    refused = ""
    for cpu, mem, disk in shapes:
        # A saved spare's memory is written to the node's disk once it is up.
        saved = mem if pool.keep == WarmPool.Keep.SAVED else 0
        ask = placement.Ask.of(template, cpu, mem, {Feature.SUSPEND}, disk_mb=disk + saved, disk_now_mb=saved)
        why = placer.refusals(ask).get(node.pk)
        if why is not None:
            refused = why[1]
            break
        placer.load_of(node).add(ask)
        vm = Vm(env=pool.env, node=node, template=template, name=f"spare-{secrets.token_hex(4)}",
                status=Vm.Status.CREATING, cpu_num=cpu, mem_mb=mem, disk_mb=disk, uuid=str(uuidlib.uuid4()),
                features=list(template.features or []), warm_pool=pool, warm_key=key)
        allocation.save_with_address(vm)
        made.append(vm)
    said = f"filling {len(made)}" if made else ""
    if made:
        record(VmKind.WARM_FILL, env=pool.env, by=None, target=f"warm pool {pool}",
               params={"vm_ids": [vm.pk for vm in made], "pool": pool.pk, "start": True, "keep": pool.keep})
    if refused:
        said += f"{'; ' if said else ''}no room for more on {node.name}: {refused}"
    return said


# --- what the admin shows -------------------------------------------------------------------


def held_by(pool: WarmPool) -> dict:
    """What the pool's live spares hold: counts by state, CPUs and memory reserved, disk."""
    spares = list(pool.spares.live())
    ready = [s for s in spares if s.status == Vm.Status.SUSPENDED]
    return {
        "ready": len(ready),
        "filling": sum(1 for s in spares if s.status in state.TRANSIENT and s.status != Vm.Status.DESTROYING),
        "other": sum(1 for s in spares
                     if s.status not in state.TRANSIENT and s.status != Vm.Status.SUSPENDED),
        "cpu": sum(s.cpu_num for s in spares),
        "mem_mb": sum(s.mem_mb for s in spares),
    }
