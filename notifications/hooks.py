"""Where notifications meet the operation runner: a finish hook (envs.runner.on_finish,
connected in NotificationsConfig.ready()), so the runner stays a leaf that knows nothing
of notifications. It only enqueues; the task makes the notification."""

from __future__ import annotations

from envs.models import Operation
from notifications.queue import enqueue


def operation_finished(operation_id: int, status: str) -> None:
    """A failed operation, or an Env destroyed by expiry: enqueue its notification."""
    if status != Operation.Status.FAILED:
        kind = Operation.objects.filter(pk=operation_id).values_list("kind", flat=True).first()
        if status != Operation.Status.SUCCEEDED or kind != Operation.Kind.ENV_EXPIRE:
            return
    enqueue("notifications.tasks.operation_finished", operation_id, name=f"notify-operation-{operation_id}")
