"""GET /api/audit/: the audit log, for staff with audit.view_auditevent (every event) and
for users on their own Envs and account (audit/scope.py)."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, viewsets

from audit import scope
from audit.models import AuditEvent
from audit.serializers import AuditEventSerializer
from ttportal.api_query import IdFilter, InstantFilter, StrictFilterSet, TextFilter


class AuditEventFilter(StrictFilterSet):
    user = IdFilter(field_name="user_id", help_text="Events by this user (id).")
    username = TextFilter(field_name="username", help_text="Events by this user (name, exactly).")
    verb = TextFilter(field_name="verb", help_text="This verb exactly (env.create), or a family ending "
                      "in a dot (env.)", method="filter_verb")
    object_type = TextFilter(field_name="object_type", help_text="env, vm, snapshot, apitoken, sshkey...")
    object_id = TextFilter(field_name="object_id")
    env = IdFilter(field_name="env_id", help_text="Events on this Env, its VMs and snapshots.")
    result = django_filters.ChoiceFilter(choices=AuditEvent.Result.choices)
    since = InstantFilter(field_name="at", lookup_expr="gte", help_text="At or after.")
    until = InstantFilter(field_name="at", lookup_expr="lt", help_text="Before.")

    class Meta:
        model = AuditEvent
        fields = ["user", "username", "verb", "object_type", "object_id", "env", "result", "since", "until"]

    def filter_verb(self, queryset, name, value):
        if not value:
            return queryset
        return queryset.filter(verb__startswith=value) if value.endswith(".") else queryset.filter(verb=value)


@extend_schema_view(
    list=extend_schema(summary="The audit log: who did what, on what, from where, and how it ended",
                       description="Staff holding audit.view_auditevent read every event; anyone else "
                       "the events on the Envs they administer (and their VMs and snapshots) and those "
                       "of their own account. Newest first."),
    retrieve=extend_schema(summary="One audit event"),
)
class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = AuditEvent.objects.none()
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter
    ordering_fields = ["at", "id"]

    def get_queryset(self):
        return scope.visible_to(self.request.user).order_by("-at", "-id")
