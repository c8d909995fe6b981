"""django-q2 entry points: thin, take ids, call notifications.services."""

from __future__ import annotations

from notifications import services


def sweep() -> str:
    """Every minute (the schedule "tt: notifications"): expiry warnings, then retries."""
    warned = services.warn_expiring_due()
    requeued = services.requeue_due()
    return f"{len(warned)} warnings, {requeued} deliveries enqueued"


def deliver(delivery_id: int) -> str:
    delivery = services.deliver(delivery_id)
    return delivery.status if delivery is not None else "missing"


def operation_finished(operation_id: int) -> str:
    notification = services.notify_operation_finished(operation_id)
    return notification.key if notification is not None else "nothing to tell"
