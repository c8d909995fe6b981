"""REST API for VMs, snapshots and templates. Thin: parse → call the service → serialize.

Lookups go through `visible_to(request.user)`: another user's VM or snapshot is a 404.
"""

from __future__ import annotations

import django_filters
from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework.decorators import action

from operations.api import OperationsActionsMixin, accepted, operation_action
from ttportal.api import idempotency_key, parse
from ttportal.api_query import BoolFilter, IdFilter, StrictFilterSet, TextFilter
from vms import policy, services
from vms.api_rows import FIELDS, vm_list_data
from vms.models import PortMapping, Snapshot, Vm, VmTemplate
from vms.serializers import (
    Blacklist,
    PortsChange,
    SnapshotCreate,
    SnapshotSerializer,
    TemplateSerializer,
    VmSerializer,
)

# --- VMs -----------------------------------------------------------------------------


class VmFilter(StrictFilterSet):
    name = TextFilter(lookup_expr="icontains")
    status = django_filters.ChoiceFilter(choices=Vm.Status.choices)
    live = BoolFilter(method="filter_live", label="Not destroyed")
    # Ids and names, not model choices (see IdFilter).
    env = IdFilter(field_name="env_id")
    node = TextFilter(field_name="node__name", label="Node name")
    template = TextFilter(field_name="template__name", label="Template name")

    class Meta:
        model = Vm
        fields = ["name", "status", "live", "env", "node", "template"]

    def filter_live(self, queryset, name, value):
        return queryset.live() if value else queryset.filter(status=Vm.Status.DESTROYED)


@extend_schema_view(
    list=extend_schema(summary="List VMs you can see (staff: every VM)"),
    retrieve=extend_schema(summary="One VM: status, address, resources, forwarded ports"),
)
class VmViewSet(OperationsActionsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                viewsets.GenericViewSet):
    queryset = Vm.objects.none()  # the model, for the schema; get_queryset scopes it
    serializer_class = VmSerializer
    filterset_class = VmFilter
    ordering_fields = ["created_at", "name", "id"]

    def get_queryset(self):
        ports = PortMapping.objects.select_related("node")
        return (
            Vm.objects.visible_to(self.request.user)
            .select_related("env", "node", "template")
            .prefetch_related(Prefetch("port_mappings", queryset=ports))
        )

    def list(self, request, *args, **kwargs):
        # The same filters, order and pages, read as plain rows: VmSerializer's output built
        # by vms/api_rows.py without a model instance per VM, Env, node and port. (A comment,
        # not a docstring: drf-spectacular would publish a docstring as the schema's text.)
        queryset = self.filter_queryset(Vm.objects.visible_to(request.user))
        page = self.paginator.paginate_values(queryset, request, FIELDS, view=self)
        return self.get_paginated_response(vm_list_data(page, request, self.format_kwarg))

    def current(self, vm: Vm):
        """The VM as it is now, for a 200 that changed nothing."""
        return self.get_serializer(self.get_queryset().get(pk=vm.pk))

    @operation_action(summary="Start the VM", unchanged=VmSerializer)
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        vm = self.get_object()
        op = services.vm_start(vm=vm, by=request.user, idempotency_key=idempotency_key(request))
        return accepted(request, op, lambda: self.current(vm))

    @operation_action(summary="Stop the VM", unchanged=VmSerializer)
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        vm = self.get_object()
        op = services.vm_stop(vm=vm, by=request.user, idempotency_key=idempotency_key(request))
        return accepted(request, op, lambda: self.current(vm))

    @operation_action(
        summary="Suspend the VM",
        description="Its memory is saved to its node's disk and it stops; starting it resumes it where it "
        "was. Engines without the suspend feature (docker) refuse with 422 unsupported_feature.",
        unchanged=VmSerializer,
    )
    @action(detail=True, methods=["post"])
    def suspend(self, request, pk=None):
        vm = self.get_object()
        op = services.vm_suspend(vm=vm, by=request.user, idempotency_key=idempotency_key(request))
        return accepted(request, op, lambda: self.current(vm))

    @operation_action(summary="Destroy the VM", description="Its addresses, ports and snapshots are freed.")
    @action(detail=True, methods=["post"], url_path="destroy", url_name="destroy")
    def destroy_vm(self, request, pk=None):
        op = services.vm_destroy(vm=self.get_object(), by=request.user,
                                 idempotency_key=idempotency_key(request))
        return accepted(request, op)

    @operation_action(Blacklist, summary="Set the addresses the VM may not reach", unchanged=VmSerializer)
    @action(detail=True, methods=["put", "post"])
    def blacklist(self, request, pk=None):
        vm = self.get_object()
        data = parse(Blacklist, request)
        op = services.vm_set_blacklist(vm=vm, addresses=data["addresses"], by=request.user,
                                       idempotency_key=idempotency_key(request))
        return accepted(request, op, lambda: self.current(vm))

    @operation_action(PortsChange, summary="Set the VM's forwarded ports", unchanged=VmSerializer)
    @action(detail=True, methods=["put", "post"])
    def ports(self, request, pk=None):
        vm = self.get_object()
        data = parse(PortsChange, request)
        op = services.vm_set_ports(vm=vm, ports=data["ports"], by=request.user,
                                   idempotency_key=idempotency_key(request))
        return accepted(request, op, lambda: self.current(vm))

    @operation_action(SnapshotCreate, summary="Snapshot the VM",
                      description="The VM is stopped for consistency, then put back in its power state.")
    @action(detail=True, methods=["post"], url_path="snapshots", url_name="snapshot")
    def snapshot(self, request, pk=None):
        vm = self.get_object()
        data = parse(SnapshotCreate, request)
        op = services.snapshot_create(vm=vm, name=data["name"], life_time=data.get("life_time"),
                                      by=request.user, idempotency_key=idempotency_key(request))
        return accepted(request, op)


# --- Snapshots ---------------------------------------------------------------------------


class SnapshotFilter(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=Snapshot.Status.choices)
    vm = IdFilter(field_name="vm_id")
    env = IdFilter(field_name="vm__env_id")
    name = TextFilter(lookup_expr="icontains")

    class Meta:
        model = Snapshot
        fields = ["status", "vm", "env", "name"]


@extend_schema_view(
    list=extend_schema(summary="List snapshots of VMs you can see"),
    retrieve=extend_schema(summary="One snapshot"),
)
class SnapshotViewSet(OperationsActionsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                      viewsets.GenericViewSet):
    queryset = Snapshot.objects.none()
    serializer_class = SnapshotSerializer
    filterset_class = SnapshotFilter
    ordering_fields = ["created_at", "name", "id"]

    def get_queryset(self):
        return Snapshot.objects.visible_to(self.request.user).select_related("vm__env")

    @operation_action(summary="Put the VM back to this snapshot")
    @action(detail=True, methods=["post"])
    def apply(self, request, pk=None):
        op = services.snapshot_apply(snapshot=self.get_object(), by=request.user,
                                     idempotency_key=idempotency_key(request))
        return accepted(request, op)

    @operation_action(summary="Delete the snapshot")
    def destroy(self, request, pk=None):
        op = services.snapshot_destroy(snapshot=self.get_object(), by=request.user,
                                       idempotency_key=idempotency_key(request))
        return accepted(request, op)

    @operation_action(summary="Delete the snapshot (the same as DELETE)")
    @action(detail=True, methods=["post"], url_path="destroy", url_name="destroy")
    def destroy_snapshot(self, request, pk=None):
        return self.destroy(request, pk)


# --- Templates ------------------------------------------------------------------------------


class TemplateFilter(StrictFilterSet):
    name = TextFilter(lookup_expr="icontains")
    enabled = BoolFilter()

    class Meta:
        model = VmTemplate
        fields = ["name", "enabled"]


@extend_schema_view(
    list=extend_schema(summary="Templates to make VMs from (staff also see those that cannot run now)",
                       description="A template is offered when it is enabled and an enabled node runs "
                       "one of its engines. Staff see every template, `runnable` false where it is not."),
    retrieve=extend_schema(summary="One template"),
)
class TemplateViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = VmTemplate.objects.none()
    serializer_class = TemplateSerializer
    filterset_class = TemplateFilter
    ordering_fields = ["name", "id"]

    def get_queryset(self):
        templates = VmTemplate.objects.all()
        if policy.may(self.request.user, "template_view_all"):
            return templates.with_runnable()
        return templates.runnable()
