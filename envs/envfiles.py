"""Env files on the server: reading one into env_create's arguments, the one action that
makes an Env from a file (env_create, then its peers), and an Env written back as a file.

The parser is envfile's (plain Python, shared with the tt command); this module only
turns its verdicts into the project's errors. Problems in a file are what an encoded
value holds, which no API schema states: EnvFileInvalid is a ConflictingInput (422 in
the API, like a user_data whose YAML does not parse), naming the line as well as the
field. A refusal by env_create of a field the file gave (a template that does not exist)
is told against the file too: `locate`.
"""

from __future__ import annotations

import copy
import math

from django.db import transaction
from django.db.models import Q

import envfile
from audit.recording import audited
from envfile import EnvFile, EnvFileError, Problem
from envfile import lifetime as lifetimes
from envs import peering, services
from envs.models import Env, Peering
from operations.models import Operation
from ttportal.errors import ConflictingInput, InvalidInput, TTError
from vms.models import Vm
from vms.new_vms import NewVm

# An Env file sent to the server: at most this many characters (and four bytes each).
MAX_CHARS = 65536
MAX_BYTES = 4 * MAX_CHARS


class EnvFileInvalid(ConflictingInput):
    """An Env file refused: every problem, each with its line. The first one is the error's
    field and message ("line 12: must be ..."); `problems` lists them all."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.line is None, p.line or 0, p.field))
        first = self.problems[0]
        super().__init__(first.field, _said(first))
        self.line = first.line

    def as_dict(self) -> dict:
        errors: dict[str, list[str]] = {}
        for problem in self.problems:
            errors.setdefault(problem.field or "file", []).append(_said(problem))
        return {**super().as_dict(), "line": self.line, "errors": errors,
                "problems": [problem.as_dict() for problem in self.problems]}


def _said(problem: Problem) -> str:
    return f"line {problem.line}: {problem.message}" if problem.line else problem.message


def read(text: str, *, name: str | None = None) -> EnvFile:
    """The file parsed and checked (never reading a file it names: `@…` is refused)."""
    if len(text) > MAX_CHARS:
        raise InvalidInput("body", f"an Env file is at most {MAX_CHARS} characters")
    try:
        return envfile.load(text, source="tt.yaml", base_dir=None, name=name)
    except EnvFileError as exc:
        raise EnvFileInvalid(exc.errors) from None


def located(ef: EnvFile, error: TTError) -> TTError:
    """A refusal of a create-body field, told against the file: its field as the file
    names it, and its line. Bad input becomes EnvFileInvalid; any other refusal (a quota,
    no capacity) keeps its kind, its message saying the line."""
    if not error.field:
        return error
    problem = ef.problem(error.field, error.message)
    if isinstance(error, InvalidInput):
        return EnvFileInvalid([problem])
    moved = copy.copy(error)
    moved.field, moved.message = problem.field, _said(problem)
    moved.args = (moved.message,)
    return moved


def create_args(ef: EnvFile) -> dict:
    """env_create's arguments (without owner and by) from a checked file."""
    body = ef.to_create_body()
    args = {
        "name": body["name"], "lifetime": body.get("lifetime"),
        "deny_outgoing": body.get("deny_outgoing", False),
        "vms": [NewVm(**vm) for vm in body["vms"]],
    }
    if "idle_suspend" in body:  # else the site's default
        args["idle_suspend"] = body["idle_suspend"]
    return args


@transaction.atomic
@audited("env.create")
def env_up(*, owner, by, name: str, vms: list[NewVm], peers: list[str] = (), lifetime=None,
           deny_outgoing: bool = False, ignore_quota: bool = False, idempotency_key: str = "",
           idle_suspend=services.SITE_DEFAULT) -> Operation:
    """Create the Env (envs.services.env_create, nothing else), then ask for its peers.

    The create body has no place for peers, so they are asked here, in the same
    transaction: the Env and its peerings are written together or not at all, and the
    create operation runs (on commit) knowing its peers. A peer is one of the owner's own
    Envs by name (peered at once: the owner manages both) or another owner's Env as
    owner/name (asked; its owner accepts by peering back). Every peer is found before
    anything is written. Sent again with the same Idempotency-Key, the first operation is
    returned and peers already asked are not asked twice."""
    others = [peering.find_env(ref if "/" in ref else f"{owner.get_username()}/{ref}", field=f"peers[{i}]")
              for i, ref in enumerate(peers)]
    op = services.env_create(owner=owner, by=by, name=name, vms=vms, lifetime=lifetime,
                             deny_outgoing=deny_outgoing, ignore_quota=ignore_quota,
                             idle_suspend=idle_suspend,
                             idempotency_key=idempotency_key)
    for other in others:
        asked = Peering.objects.of(op.env).current().filter(Q(env_a=other) | Q(env_b=other)).exists()
        if not asked:
            peering.env_peer(env=op.env, other=other, by=by)
    return op


def env_up_from(ef: EnvFile, *, owner, by, idempotency_key: str = "",
                ignore_quota: bool = False) -> Operation:
    """env_up of a checked file; a refusal names the file's field and line."""
    try:
        return env_up(owner=owner, by=by, peers=ef.peers, ignore_quota=ignore_quota,
                      idempotency_key=idempotency_key, **create_args(ef))
    except TTError as exc:
        raise located(ef, exc) from exc


# --- export --------------------------------------------------------------------------


def document_of(env: Env) -> dict:
    """The Env as a file: up again, it makes an Env of the same shape (one entry per live VM,
    with its template, size, ports, network, user_data; the lifetime it was given, counted
    again from its new start; its peers)."""
    doc: dict = {"name": env.name, "lifetime": lifetimes.text(_seconds(env))}
    if env.deny_outgoing:
        doc["deny_outgoing"] = True
    if env.idle_suspend:
        doc["idle_suspend"] = env.idle_suspend
    shown = peering.peerings_of(env)
    peers = [other for status in ("active", "outgoing") for other in shown[status]]
    if peers:
        doc["peers"] = [other.name if other.owner_id == env.owner_id else f"{other.owner.get_username()}/"
                        f"{other.name}" for other in peers]
    vms = (env.vms.live().select_related("template").prefetch_related("port_mappings").order_by("name", "pk"))
    doc["vms"] = [_vm_entry(vm) for vm in vms]
    return doc


def _seconds(env: Env) -> int:
    return max(1, math.ceil((env.end_at - env.start_at).total_seconds()))


def _vm_entry(vm: Vm) -> dict:
    entry: dict = {"name": vm.name, "template": vm.template.name, "cpu_num": vm.cpu_num, "mem_mb": vm.mem_mb,
                   "disk_mb": vm.disk_mb}
    ports = [m.inner_port if m.protocol == "tcp" else f"{m.inner_port}/{m.protocol}"
             for m in vm.port_mappings.all()]
    if ports:
        entry["ports"] = ports
    if vm.net_kind != Vm.NetKind.NAT:
        entry["net_kind"] = vm.net_kind
    if vm.user_data:
        entry["user_data"] = vm.user_data
    if vm.keep_image:
        entry["keep_image"] = True
    if not vm.rand_uuid:
        entry["rand_uuid"] = False
    return entry


def text_of(env: Env) -> str:
    """The Env as tt.yaml's text."""
    header = f"# The Env {env.name} of {env.owner.get_username()}, as an Env file: tt env up -f tt.yaml\n"
    return header + envfile.dump(document_of(env))
