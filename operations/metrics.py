"""The operations' families of /metrics: operations by kind and status, and a histogram
of how long the finished ones ran (registered at start-up with the other collectors)."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from operations import registry
from operations.models import Operation

# Upper bounds (seconds) of the operation duration buckets: network changes take
# well under a second, a VM's create or a snapshot of a big disk minutes.
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class OperationCollector:
    def collect(self):
        counts = {(row["kind"], row["status"]): row["n"]
                  for row in Operation.objects.values("kind", "status").annotate(n=Count("id")).order_by()}
        family = GaugeMetricFamily("tt_operations", "Operations by kind and status.",
                                   labels=["kind", "status"])
        for kind in registry.kind_values():  # every app's kinds
            for status in Operation.Status.values:
                family.add_metric([kind, status], counts.get((kind, status), 0))
        yield family
        yield self.durations()

    def durations(self) -> HistogramMetricFamily:
        """Every finished operation (all of them, not a window: the counts only grow, as a
        Prometheus histogram's must; rate() over the buckets picks the window), from its
        started and finished times, counted into fixed buckets by the database."""
        took = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        buckets = {f"le_{i}": Count("id", filter=Q(took__lte=timedelta(seconds=bound)))
                   for i, bound in enumerate(DURATION_BUCKETS)}
        rows = (
            Operation.objects.filter(status__in=Operation.DONE, started_at__isnull=False,
                                     finished_at__isnull=False)
            .annotate(took=took).values("kind", "status")
            .annotate(n=Count("id"), total=Sum("took"), **buckets).order_by("kind", "status")
        )
        family = HistogramMetricFamily(
            "tt_operation_duration_seconds",
            "How long finished operations ran, from their start to their end, by kind and status.",
            labels=["kind", "status"],
        )
        for row in rows:
            counts = [(floatToGoString(bound), row[f"le_{i}"]) for i, bound in enumerate(DURATION_BUCKETS)]
            total = row["total"].total_seconds() if row["total"] is not None else 0.0
            family.add_metric([row["kind"], row["status"]], [*counts, ("+Inf", row["n"])], max(0.0, total))
        return family
