"""Where each app tells the operation framework what it runs: its operation kinds (an
enum of its own), the step of each kind, and what the framework must know of a kind.

An app registers from its AppConfig.ready() (or a module ready() imports), so the
framework never names an app above it: the runner finds a step by the kind's value,
the model's `kind` column takes its choices from here.

    registry.register_kinds(EnvKind, tags={registry.UNCAPPED: {EnvKind.ENV_DESTROY}})
    registry.register_steps({EnvKind.ENV_CREATE: Step(run=..., settle=...)})
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db.models import TextChoices

from engines.errors import ErrorCode, TTError

# Tags a kind may carry, asked by whoever needs to know without naming the kind's app.
UNCAPPED = "uncapped"  # never held up by a user's cap on queued operations (gives back)
CREATES_VMS = "creates_vms"  # may take warm spares: their pools refill once it ends
DESTROYS_ENV = "destroys_env"  # takes every VM of its Env over

# Names of tasks registered with register_task.
NODE_BEAT = "node_beat"  # task(node name): one beat of that node, on its own cluster

_KINDS: dict[str, str] = {}  # value -> label, in registration order
_TAGS: dict[str, set[str]] = {}


def register_kinds(kinds: type[TextChoices], *, tags: dict[str, Iterable[str]] | None = None) -> None:
    """An app's own kinds; a value belongs to one app only."""
    for value, label in kinds.choices:
        if _KINDS.get(value, label) != label:
            raise RuntimeError(f"operation kind {value} registered twice")
        _KINDS[value] = label
    for tag, values in (tags or {}).items():
        _TAGS.setdefault(tag, set()).update(str(v) for v in values)


def kind_label(value: str) -> str:
    """A kind's label ("Create Env"); a value no app registers, as stored."""
    return _KINDS.get(value, value)


def kind_choices() -> list[tuple[str, str]]:
    """The choices of Operation.kind (and the API's OperationKindEnum): every app's kinds."""
    return list(_KINDS.items())


class _EveryKind:
    """kind_choices() for whoever takes a list of choices at import time (a filter, a form
    field) where the apps may not have registered yet: read each time it is iterated."""

    def __iter__(self):
        return iter(kind_choices())

    def __len__(self) -> int:
        return len(_KINDS)


KIND_CHOICES = _EveryKind()


def kind_values() -> list[str]:
    return list(_KINDS)


def kinds_tagged(tag: str) -> frozenset[str]:
    return frozenset(_TAGS.get(tag, ()))


# Tasks an app lower down must schedule without naming the app that runs them (a node's
# heartbeat schedule, made by nodes, runs vms' beat): name -> the task's dotted path.
_TASKS: dict[str, str] = {}


def register_task(name: str, task: Callable) -> None:
    _TASKS[name] = f"{task.__module__}.{task.__qualname__}"


def task_path(name: str) -> str:
    """The dotted path of the task registered as `name` (for async_task, a Schedule's func)."""
    try:
        return _TASKS[name]
    except KeyError:
        raise RuntimeError(f"no task registered as {name}") from None


def _nothing_to_settle(op) -> None:
    pass


Progress = Callable[[int, str], None]


@dataclass(frozen=True)
class Step:
    """What an operation kind does (`run`) and how its claims are put back (`settle`).

    `run(op, progress)` must be safe to run again after a crash at any point.
    `settle(op)` runs after `run` failed, or instead of it when the worker was
    lost every attempt: whatever `run` got to, it leaves every VM, snapshot and
    Env it claimed in a state an action is allowed from.
    """

    run: Callable[..., None]
    settle: Callable[..., None] = _nothing_to_settle


STEPS: dict[str, Step] = {}


def register_steps(steps: dict[str, Step]) -> None:
    """Each kind has exactly one step."""
    for kind, step in steps.items():
        if kind in STEPS and STEPS[kind] is not step:
            raise RuntimeError(f"two steps registered for operation kind {kind}")
        STEPS[str(kind)] = step


def step_of(op) -> Step:
    try:
        return STEPS[op.kind]
    except KeyError:
        raise TTError(f"no step registered for {op.kind}", code=ErrorCode.INTERNAL) from None
