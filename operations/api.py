"""REST API for Operations, and what every app's long actions answer with: 202 and the
Operation to poll (accepted), their schema (operation_action) and the mixin that tells the
schema a view set has them. Here, below every app that runs operations, so vms and envs
both use it.
"""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.response import Response

from operations import registry
from operations.models import Operation
from operations.serializers import OperationSerializer
from ttportal.api_query import IdFilter, StrictFilterSet


def accepted(request, op: Operation | None, unchanged=None) -> Response:
    """202 with the operation; Location is where to watch it.

    A service answers None when the request asks for what already is (start a running
    VM): nothing was recorded, and the answer is 200 with the object's current state,
    which `unchanged()` serializes."""
    if op is None:
        return Response(unchanged().data, status=status.HTTP_200_OK)
    data = OperationSerializer(op, context={"request": request}).data
    # str(): the serializer gives a Hyperlink, and WSGI servers accept only exact str headers.
    return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": str(data["url"])})


def operation_action(request_serializer=None, *, summary: str, description: str = "", unchanged=None):
    """Schema of a long action: its body, and 202 with the Operation (and 200 with
    `unchanged`, the object's serializer, where asking for what already is changes nothing)."""
    responses = {202: OpenApiResponse(OperationSerializer, description="Accepted: the Operation to poll.")}
    if unchanged is not None:
        responses[200] = OpenApiResponse(
            unchanged, description="Nothing to do: it is so already. No operation was recorded; "
            "the body is the current state.")
    return extend_schema(request=request_serializer, responses=responses, summary=summary,
                         description=description)


class OperationsActionsMixin:
    # Read by ttportal.api_schema.AutoSchema: mutations here take Idempotency-Key and may
    # answer 409/422/429.
    operation_actions = True


# --- Operations ---------------------------------------------------------------------


class OperationFilter(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=Operation.Status.choices)
    kind = django_filters.ChoiceFilter(choices=registry.KIND_CHOICES)
    env = IdFilter(field_name="env_id")
    vm = IdFilter(field_name="vm_id")
    snapshot = IdFilter(field_name="snapshot_id")

    class Meta:
        model = Operation
        fields = ["status", "kind", "env", "vm", "snapshot"]


@extend_schema_view(
    list=extend_schema(summary="Operations on Envs you can see: progress and audit log"),
    retrieve=extend_schema(summary="One operation: status, progress, log, error code"),
)
class OperationViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Operation.objects.none()
    serializer_class = OperationSerializer
    filterset_class = OperationFilter
    ordering_fields = ["created_at", "id"]

    def get_queryset(self):
        return Operation.objects.visible_to(self.request.user).select_related("requested_by")
