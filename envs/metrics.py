"""The Envs' family of /metrics: Envs by status, and those ending within the hour
(registered by EnvsConfig.ready())."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from envs.models import Env

EXPIRING_WITHIN = timedelta(hours=1)


class EnvCollector:
    def collect(self):
        now = timezone.now()
        counts = dict(Env.objects.values_list("status").annotate(n=Count("id")).order_by())
        family = GaugeMetricFamily("tt_envs", "Envs by status.", labels=["status"])
        for status in Env.Status.values:
            family.add_metric([status], counts.get(status, 0))
        yield family
        expiring = Env.objects.filter(status=Env.Status.ACTIVE, end_at__gte=now,
                                      end_at__lt=now + EXPIRING_WITHIN).count()
        yield GaugeMetricFamily("tt_envs_expiring_next_hour",
                                "Active Envs whose end comes within the next hour.", value=expiring)
