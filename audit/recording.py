"""Writing audit events: `record` (one event) and `audited` (a service's event, written once,
whatever the interface that called it).

An event holds names and ids, never secrets (a token's or webhook's secret, a password),
user-data contents, file contents or command outputs: what goes in `detail` is given
explicitly by each caller, never taken from a service's arguments wholesale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError, models, transaction

from audit import context
from audit.models import AuditEvent
from engines.errors import EngineError, TTError

log = logging.getLogger(__name__)

OK, REFUSED, FAILED = AuditEvent.Result.OK, AuditEvent.Result.REFUSED, AuditEvent.Result.FAILED

# The arguments that name what a service acts on, most specific first.
TARGET_ARGS = ("snapshot", "vm", "env", "blueprint", "token", "key", "webhook", "op", "peering", "pool")
# Those that name the user the action is for, when the target is not made yet.
OWNER_ARGS = ("owner", "user")


def enabled() -> bool:
    return getattr(settings, "TT_AUDIT_ENABLED", True)


# Set on what a service returns without acting anew (an Idempotency-Key's replay answers with
# the first request's operation; a wake asked again gets the one under way): its `audited`
# wrapper records nothing, the first event stands.
ALREADY_RECORDED = "audit_already_recorded"


def already_recorded(result):
    """`result`, marked as the answer of a call that did nothing new: no new event."""
    setattr(result, ALREADY_RECORDED, True)
    return result


def _user(value):
    """`value` if it is a signed-in user (an AbstractBaseUser with a pk), else None."""
    if value is None or not getattr(value, "is_authenticated", False) or getattr(value, "pk", None) is None:
        return None
    return value


@dataclasses.dataclass(frozen=True)
class Ref:
    """An object named without its model instance (the admin's log names a type, an id and
    a name): `record(..., on=Ref("userquota", "3", "alice"))`."""

    object_type: str
    object_id: str
    object_name: str = ""
    env_id: int | None = None
    owner_id: int | None = None


def describe(obj) -> dict:
    """What an event says of the object it is on: type, id and name at the time, the Env
    it belongs to and its owner. Reads the relations the services hold already (vm.env)."""
    if isinstance(obj, Ref):
        found = dataclasses.asdict(obj)
        found["object_type"], found["object_id"] = obj.object_type[:64], str(obj.object_id)[:64]
        found["object_name"] = str(obj.object_name)[:200]
        return found
    if obj is None or not isinstance(obj, models.Model):
        return {}
    meta = obj._meta
    kind = meta.model_name
    if meta.label == "operations.Operation":
        inner = obj.snapshot or obj.vm or obj.env
        found = (describe(inner) if inner is not None
                 else {"object_type": "operation", "object_id": str(obj.pk)})
        found["object_name"] = (obj.target or found.get("object_name", ""))[:200]
        return found
    public_id = getattr(obj, "public_id", None)  # a token's pk is its digest: named by public id
    name = getattr(obj, "name", None)
    found = {"object_type": kind, "object_id": str(public_id or obj.pk or "")[:64],
             "object_name": str(name if isinstance(name, str) and name else obj)[:200]}
    env = env_id = None
    if kind == "env":
        env, env_id = obj, obj.pk
    elif kind == "vm":
        env_id = obj.env_id
        env = obj.env if env_id else None
    elif kind == "snapshot":
        env = obj.vm.env
        env_id = env.pk
    found["env_id"] = env_id
    owner_id = getattr(env, "owner_id", None) if env is not None else None
    if owner_id is None:
        owner_id = getattr(obj, "owner_id", None) or getattr(obj, "user_id", None)
    found["owner_id"] = owner_id
    return found


def record(verb: str, *, by=None, on=None, result: str = OK, code: str = "", detail: dict | None = None,
           owner=None, username: str | None = None,
           origin: context.Origin | None = None) -> AuditEvent | None:
    """Write one event (in the caller's transaction, if any). `by`: the acting user (None:
    the system, named by the context); `on`: the model instance acted on; `owner`: whom it
    is for, when `on` does not say (a refused create); `username`: the name given when
    there is no user (a failed login)."""
    if not enabled():
        return None
    origin = origin or context.current()
    actor = _user(by)
    fields = describe(on)
    owner_id = fields.pop("owner_id", None)
    if owner_id is None and owner is not None:
        owner_id = getattr(owner, "pk", owner)
    event = AuditEvent(
        user=actor, username=(actor.get_username() if actor else (username or ""))[:150],
        system="" if actor or username else origin.system, owner_id=owner_id,
        verb=verb, interface=origin.interface, address=origin.address, user_agent=origin.user_agent,
        token_id=origin.token_id, result=result, code=str(code or "")[:64], detail=detail or {}, **fields,
    )
    event.save(force_insert=True)
    return event


def outcome(exc: BaseException) -> tuple[str, str]:
    """(result, code) of an exception: a refusal is a TTError that is not an engine's failure."""
    if isinstance(exc, TTError):
        return (FAILED if isinstance(exc, EngineError) else REFUSED), str(exc.code)
    return FAILED, "internal"


def _record_after_rollback(verb: str, **kwargs) -> None:
    """A refused or failed action's event, written after its own transaction rolled back:
    in a savepoint when a caller's transaction is still open (that transaction may roll back
    too, then the event goes with it), never hiding the error it records."""
    try:
        conn = transaction.get_connection()
        if conn.in_atomic_block and conn.needs_rollback:
            return  # the caller's transaction is broken: nothing can be written in it
        with transaction.atomic():
            record(verb, **kwargs)
    except DatabaseError:
        log.exception("could not record the audit event %s", verb)


def audited(verb: str, *, on: str | Callable | None = None, detail: Callable | None = None,
            skip_none: bool = False, refused_when_failed: bool = False, atomic: bool = True) -> Callable:
    """Decorate a service: its event, once, whatever the interface.

    The service runs in a transaction; when it returns, the event is written in that same
    transaction (`ok`); when it raises, after the roll-back (`refused` with a refusal's
    code, or `failed`). A service called by another audited one records nothing itself:
    one event per action.

    `on`: the argument naming the object (default: the first of TARGET_ARGS given, else
    what the service returns: the Operation's object, or the model it made), or a function
    of (kwargs, result). `detail(kwargs, result)`: the small, secret-free detail.
    The acting user is the `by` argument (or `user`, for self-service: token_create).
    A `kind` argument other than the default (env_destroy's env_expire) names the verb:
    `env_expire` -> `env.expire`. A result marked `already_recorded` (an Idempotency-Key's
    replay, a wake already under way) records nothing: nothing ran again. `skip_none`: a
    call that returns None did nothing and records nothing (the system's sweeps: an Env
    that cannot sleep now). `refused_when_failed`: an operation returned already failed was refused when
    asked (a wake with no room): recorded as refused with its code. `atomic=False`
    for a service that must not run in one transaction (it talks to a guest meanwhile, or
    records its own failure before raising): its event is written after it, on its own.
    """

    def decorate(service: Callable) -> Callable:
        signature = inspect.signature(service)

        @functools.wraps(service)
        def wrapper(*args, **kwargs):
            origin = context.current()
            if origin.depth or not enabled():
                return service(*args, **kwargs)
            origin.depth += 1
            try:
                with transaction.atomic() if atomic else contextlib.nullcontext():
                    result = service(*args, **kwargs)
                    origin.depth -= 1
                    if not (getattr(result, ALREADY_RECORDED, False) or (skip_none and result is None)):
                        _write(verb, signature, args, kwargs, result, None)
                return result
            except Exception as exc:
                if origin.depth:
                    origin.depth -= 1
                    _write(verb, signature, args, kwargs, None, exc)
                raise

        wrapper.audit_verb = verb
        return wrapper

    def _write(verb, signature, args, kwargs, result, exc):
        try:  # every argument by name, however it was passed
            kwargs = dict(signature.bind_partial(*args, **kwargs).arguments)
            kwargs.update(kwargs.pop(next((n for n, p in signature.parameters.items()
                                           if p.kind == p.VAR_KEYWORD), ""), {}))
        except TypeError:
            pass
        kind = kwargs.get("kind")
        name = kind.replace("_", ".", 1) if isinstance(kind, str) and kind else verb
        target = _target(kwargs, args, result, on)
        by = kwargs["by"] if "by" in kwargs else kwargs.get("user")
        owner = next((kwargs[a] for a in OWNER_ARGS if _user(kwargs.get(a)) is not None), None)
        extra = {}
        if detail is not None:
            try:
                extra = detail(kwargs, result) or {}
            except Exception:  # a detail that cannot be read never hides the action
                log.exception("audit detail of %s", name)
        if kwargs.get("ignore_quota"):
            extra["ignore_quota"] = True
        op = result if _is_operation(result) else None
        if op is not None:
            extra["operation"] = op.pk
        if exc is None and refused_when_failed and op is not None and op.status == op.Status.FAILED:
            record(name, by=by, on=target, owner=owner, detail=extra, result=REFUSED, code=op.error_code)
        elif exc is None:
            record(name, by=by, on=target, owner=owner, detail=extra)
        else:
            result_, code = outcome(exc)
            _record_after_rollback(name, by=by, on=target, owner=owner, detail=extra, result=result_,
                                   code=code)

    return decorate


@contextlib.contextmanager
def on_its_own():
    """What runs inside is an action of its own, recorded even inside another audited
    service: a sleeping Env woken by going into one of its VMs (`env.wake`, besides the
    console's or command's own event)."""
    origin = context.current()
    depth, origin.depth = origin.depth, 0
    try:
        yield
    finally:
        origin.depth = depth


def _is_operation(value) -> bool:
    return isinstance(value, models.Model) and value._meta.label == "operations.Operation"


def _target(kwargs, args, result, on):
    if callable(on):
        return on(kwargs, result)
    if isinstance(on, str):
        return kwargs.get(on)
    made = result[0] if isinstance(result, tuple) and result else result  # (token, secret): the token
    if isinstance(made, models.Model) and (
            _is_operation(made) or not any(isinstance(kwargs.get(a), models.Model) for a in TARGET_ARGS)):
        return made
    for name in TARGET_ARGS:
        if isinstance(kwargs.get(name), models.Model):
            return kwargs[name]
    return next((a for a in args if isinstance(a, models.Model)), None)
