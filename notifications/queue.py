"""Handing notification work to django-q2. Enqueuing never fails its caller (the expiry
sweep, the operation runner's hook, a request): a lost task is found again by the
notifications sweep, which runs every minute."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)


def enqueue(func: str, arg: int, *, name: str) -> bool:
    from django_q.tasks import async_task

    try:
        # django-q reads its own `sync` flag once at import; ours per call (tests run inline).
        # The site's queue by name: a node's worker, which runs finish hooks, would
        # otherwise enqueue into its own.
        async_task(func, arg, task_name=name, cluster=settings.Q_CLUSTER["name"],
                   sync=bool(settings.Q_CLUSTER.get("sync")))
    except Exception:
        log.exception("could not enqueue %s(%s); the notifications sweep will", func, arg)
        return False
    return True


def deliver_on_commit(delivery_ids: list[int]) -> None:
    """Enqueue a delivery task for each once the caller's transaction commits."""
    if not delivery_ids:
        return

    def run() -> None:
        from django.utils import timezone

        from notifications.models import Delivery

        Delivery.objects.filter(pk__in=delivery_ids).update(queued_at=timezone.now())
        for pk in delivery_ids:
            enqueue("notifications.tasks.deliver", pk, name=f"delivery-{pk}")

    transaction.on_commit(run)
