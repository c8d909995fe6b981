"""Where notifications meet the operation runner: a finish hook (operations.runner.on_finish,
connected in NotificationsConfig.ready()), so the runner stays a leaf that knows nothing
of notifications. It only enqueues; the task makes the notification."""

from __future__ import annotations

from envs.kinds import EnvKind
from notifications.queue import enqueue
from operations.models import Operation


def operation_finished(operation_id: int, status: str) -> None:
    """A failed operation, or an Env destroyed by expiry: enqueue its notification."""
    if status != Operation.Status.FAILED:
        kind = Operation.objects.filter(pk=operation_id).values_list("kind", flat=True).first()
        if status != Operation.Status.SUCCEEDED or kind != EnvKind.ENV_EXPIRE:
            return
    enqueue("notifications.tasks.operation_finished", operation_id, name=f"notify-operation-{operation_id}")
