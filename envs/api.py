"""REST API for Envs (Operations: operations/api.py). Thin: parse → call the service → serialize.

Objects are looked up through `visible_to(request.user)`, so another user's
Env is a 404, never a 403 that would confirm it exists. Long actions answer
202 with the Operation (poll /api/operations/{id}/).
"""

from __future__ import annotations

import django_filters
from django.contrib.auth import get_user_model
from django.db.models import Prefetch
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from envs import cloning, envfiles, peering, services, sharing
from envs.envfile_api import ENVFILE_PARAMETER, EnvFileNegotiation, ErrorsAsJson, envfile_text, sends_envfile
from envs.models import Env, EnvMember
from envs.serializers import (
    DenyOutgoing,
    EnvClone,
    EnvCreate,
    EnvExtend,
    EnvMemberSerializer,
    EnvSerializer,
    EnvTransfer,
    IdleSuspend,
    MemberAdd,
    MemberChange,
    PeerRequest,
)
from operations.api import OperationsActionsMixin, accepted, operation_action
from ttportal.api import flatten_errors, idempotency_key, parse
from ttportal.api_query import BoolFilter, StrictFilterSet, TextFilter
from ttportal.errors import ConflictingInput, Forbidden, NotFound
from vms import policy
from vms.models import Vm
from vms.new_vms import NewVm
from vms.serializers import NewVmSerializer
from vms.services import vm_add

# --- Envs ------------------------------------------------------------------------


class EnvFilter(StrictFilterSet):
    name = TextFilter(lookup_expr="icontains")
    status = django_filters.ChoiceFilter(choices=Env.Status.choices)
    live = BoolFilter(method="filter_live", label="Not destroyed")
    owner = TextFilter(field_name="owner__username", label="Owner's username (staff)")

    class Meta:
        model = Env
        fields = ["name", "status", "live", "owner"]

    def filter_live(self, queryset, name, value):
        return queryset.live() if value else queryset.filter(status=Env.Status.DESTROYED)


@extend_schema_view(
    list=extend_schema(summary="List Envs you can see (staff: every Env)"),
    retrieve=extend_schema(summary="One Env with its live VMs"),
)
class EnvViewSet(OperationsActionsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                 viewsets.GenericViewSet):
    queryset = Env.objects.none()  # the model, for the schema; get_queryset scopes it
    serializer_class = EnvSerializer
    filterset_class = EnvFilter
    ordering_fields = ["start_at", "end_at", "name", "id"]
    content_negotiation_class = EnvFileNegotiation

    def get_queryset(self):
        live_vms = Vm.objects.live().select_related("node").order_by("name", "id")
        return (
            Env.objects.visible_to(self.request.user)
            .select_related("owner")
            .prefetch_related(Prefetch("vms", queryset=live_vms, to_attr="live_vms"))
        )

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        shared = [env.pk for env in page if env.owner_id != request.user.pk]  # one query, if any
        context = {**self.get_serializer_context(), "peerings": peering.peerings_of_many(page),
                   "roles": EnvMember.objects.roles_by_env(request.user, shared) if shared else {}}
        return self.get_paginated_response(self.serializer_class(page, many=True, context=context).data)

    @extend_schema(parameters=[ENVFILE_PARAMETER])
    @operation_action(EnvCreate, summary="Create an Env with its VMs",
                      description="The VMs are created and booted by the returned operation; "
                      "its `env` is the new Env's id. With `?format=envfile` (or a YAML Content-Type) "
                      "the body is an Env file instead (docs: Env files); its `peers` are asked once the "
                      "Env exists, in the same request.")
    def create(self, request):
        if sends_envfile(request):
            return self._create_from_file(request)
        data = dict(parse(EnvCreate, request))
        owner = self._owner(request, data.pop("owner", None))
        vms = [NewVm(**vm) for vm in data.pop("vms")]
        op = services.env_create(owner=owner, by=request.user, vms=vms,
                                 idempotency_key=idempotency_key(request), **data)
        return accepted(request, op)

    def _create_from_file(self, request):
        """The same as the JSON body: the file's create body is checked by EnvCreate, then
        env_create makes the Env (envfiles.env_up: and asks its peers)."""
        ef = envfiles.read(envfile_text(request))
        try:
            EnvCreate(data=ef.to_create_body()).is_valid(raise_exception=True)
        except ValidationError as exc:
            raise envfiles.EnvFileInvalid([ef.problem(field, messages[0]) for field, messages
                                           in flatten_errors(exc.detail).items()]) from None
        op = envfiles.env_up_from(ef, owner=request.user, by=request.user,
                                  idempotency_key=idempotency_key(request))
        return accepted(request, op)

    @extend_schema(summary="The Env as an Env file (tt.yaml)",
                   description="One entry per live VM; `POST /api/envs/?format=envfile` of it makes an "
                   "Env of the same shape (give it another name while this one lives). The file's "
                   "text is text/yaml, or application/yaml when Accept names it.",
                   # YAML text of the file's document (whose schema is /api/schema/envfile.json).
                   responses={(200, "text/yaml"): OpenApiResponse(OpenApiTypes.OBJECT,
                                                                  description="tt.yaml")},
                   parameters=[OpenApiParameter("format", exclude=True)])
    @action(detail=True, methods=["get"], url_path="envfile", url_name="envfile",
            content_negotiation_class=ErrorsAsJson)
    def envfile(self, request, pk=None):
        env = self.get_object()
        media = "application/yaml" if "application/yaml" in request.headers.get("Accept", "") else "text/yaml"
        return HttpResponse(envfiles.text_of(env), content_type=f"{media}; charset=utf-8")

    @staticmethod
    def _owner(request, username):
        if username in (None, "", request.user.get_username()):
            return request.user
        # Refuse before looking the name up, so nobody can probe which usernames exist.
        if not policy.may(request.user, "env_create"):
            raise Forbidden(f"only staff with the permission {policy.permission_for('env_create')} "
                            "may create an Env for another user")
        owner = get_user_model().objects.filter(username=username, is_active=True).first()
        if owner is None:
            raise ConflictingInput("owner", "must name an active user")
        return owner

    @operation_action(EnvExtend, summary="Move the Env's end",
                      description="Done at once: the operation is already `succeeded`.")
    @action(detail=True, methods=["post"])
    def extend(self, request, pk=None):
        env = self.get_object()
        data = parse(EnvExtend, request)
        op = services.env_extend(env=env, by=request.user, idempotency_key=idempotency_key(request),
                                 end_at=data.get("end_at"), lifetime=data.get("lifetime"))
        return accepted(request, op)

    def current(self, env: Env):
        """The Env as it is now, for a 200 that changed nothing."""
        return self.get_serializer(self.get_queryset().get(pk=env.pk))

    @operation_action(summary="Start every stopped VM of the Env", unchanged=EnvSerializer)
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        env = self.get_object()
        op = services.env_start(env=env, by=request.user, idempotency_key=idempotency_key(request))
        return accepted(request, op, lambda: self.current(env))

    @operation_action(summary="Stop every running VM of the Env", unchanged=EnvSerializer)
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        env = self.get_object()
        op = services.env_stop(env=env, by=request.user, idempotency_key=idempotency_key(request))
        return accepted(request, op, lambda: self.current(env))

    @operation_action(DenyOutgoing, summary="Deny (or allow again) the Env's outgoing traffic",
                      unchanged=EnvSerializer)
    @action(detail=True, methods=["post"], url_path="deny-outgoing", url_name="deny-outgoing")
    def deny_outgoing(self, request, pk=None):
        env = self.get_object()
        data = parse(DenyOutgoing, request)
        op = services.env_set_deny_outgoing(env=env, deny=data["deny"], by=request.user,
                                            idempotency_key=idempotency_key(request))
        return accepted(request, op, lambda: self.current(env))

    @operation_action(EnvClone, summary="Clone the Env: new Envs whose VMs start from its disks as they are",
                      description="Each VM's disk is cut at this moment (its guest's filesystems frozen "
                      "by its agent, or crash-consistent without one, or the VM stopped) and becomes the "
                      "backing file of each clone's disk, so a clone costs the same whatever the disk's "
                      "size. The clones get new names, MACs, IPs, machine ids and public ports, and are "
                      "yours; this Env keeps running. The operation is on this Env: its `params.envs` are "
                      "the clones' Env ids. Quotas count each clone as a new Env.")
    @action(detail=True, methods=["post"], url_path="clone", url_name="clone")
    def clone(self, request, pk=None):
        env = self.get_object()
        data = parse(EnvClone, request)
        op = cloning.env_clone(env=env, by=request.user, idempotency_key=idempotency_key(request), **data)
        return accepted(request, op)

    @extend_schema(request=IdleSuspend, responses=EnvSerializer, summary="Sleep when idle (or never)",
                   description="Done at once; the answer is the Env. A sleeping Env sleeps on until "
                   "its next connection.")
    @action(detail=True, methods=["post"], url_path="idle-suspend", url_name="idle-suspend")
    def idle_suspend(self, request, pk=None):
        env = self.get_object()
        data = parse(IdleSuspend, request)
        services.env_set_idle_suspend(env=env, minutes=data["minutes"], by=request.user)
        return Response(self.current(env).data)

    @operation_action(summary="Destroy the Env and all its VMs")
    @action(detail=True, methods=["post"], url_path="destroy", url_name="destroy")
    def destroy_env(self, request, pk=None):
        op = services.env_destroy(env=self.get_object(), by=request.user,
                                  idempotency_key=idempotency_key(request))
        return accepted(request, op)

    @operation_action(PeerRequest, summary="Peer the Env with another (ask, or accept its owner's ask)",
                      description="Envs are isolated: a VM reaches the VMs of its own Env only. Once "
                      "both owners asked (or one person who may manage both), the two Envs' VMs reach "
                      "each other. A mere ask is recorded at once (a `succeeded` operation).")
    @action(detail=True, methods=["post"], url_path="peers", url_name="peer")
    def peer(self, request, pk=None):
        env = self.get_object()
        other = peering.find_env(parse(PeerRequest, request)["env"])
        op = peering.env_peer(env=env, other=other, by=request.user, idempotency_key=idempotency_key(request))
        return accepted(request, op)

    @operation_action(summary="End (decline, withdraw) the peering with another Env")
    @action(detail=True, methods=["delete"], url_path=r"peers/(?P<other>[0-9]{1,18})", url_name="unpeer")
    def unpeer(self, request, pk=None, other=None):
        env = self.get_object()
        other_env = peering.peer_of(env, int(other))
        if other_env is None:
            raise NotFound("this Env has no peering with that one")
        op = peering.env_unpeer(env=env, other=other_env, by=request.user,
                                idempotency_key=idempotency_key(request))
        return accepted(request, op)

    @operation_action(NewVmSerializer, summary="Add a VM to the Env")
    @action(detail=True, methods=["post"], url_path="vms", url_name="add-vm")
    def add_vm(self, request, pk=None):
        env = self.get_object()
        data = parse(NewVmSerializer, request)
        op = vm_add(env=env, spec=NewVm(**data), by=request.user, idempotency_key=idempotency_key(request))
        return accepted(request, op)

    # --- sharing (envs/sharing.py) ----------------------------------------------------------

    @extend_schema(summary="The Env's members: users and groups it is shared with, each with a role",
                   responses=EnvMemberSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="members", url_name="members",
            pagination_class=None, filterset_class=None)
    def members(self, request, pk=None):
        env = self.get_object()
        return Response(EnvMemberSerializer(sharing.members_of(env), many=True).data)

    @extend_schema(summary="Share the Env with a user or a group, in a role",
                   description="Its owner, an admin member or staff with envs.change_env. Quotas stay "
                   "the owner's: what a member adds is charged to the owner.",
                   request=MemberAdd, responses={201: EnvMemberSerializer})
    @members.mapping.post
    def add_member(self, request, pk=None):
        env = self.get_object()
        data = parse(MemberAdd, request)
        member = sharing.env_share(env=env, user=data.get("user"), group=data.get("group"), role=data["role"],
                                   by=request.user)
        return Response(EnvMemberSerializer(member).data, status=201)

    def _member(self, env: Env, member_id) -> EnvMember:
        member = EnvMember.objects.select_related("env", "user", "group").filter(
            env=env, pk=int(member_id)).first()
        if member is None:
            raise NotFound("this Env has no such member")
        return member

    @extend_schema(summary="Change a member's role (at once, open consoles too)",
                   request=MemberChange, responses=EnvMemberSerializer)
    @action(detail=True, methods=["patch"], url_path=r"members/(?P<member_id>[0-9]{1,18})",
            url_name="member")
    def member(self, request, pk=None, member_id=None):
        env = self.get_object()
        member = self._member(env, member_id)
        data = parse(MemberChange, request)
        member = sharing.env_member_set_role(member=member, role=data["role"], by=request.user)
        return Response(EnvMemberSerializer(member).data)

    @extend_schema(summary="Take a member's role away (at once: their open consoles close)",
                   responses={204: None})
    @member.mapping.delete
    def remove_member(self, request, pk=None, member_id=None):
        env = self.get_object()
        sharing.env_unshare(member=self._member(env, member_id), by=request.user)
        return Response(status=204)

    @extend_schema(summary="Give the Env to one of its members",
                   description="Its owner, or staff with envs.change_env. The new owner's quota must "
                   "take everything the Env holds (422 quota_exceeded naming the quota otherwise); "
                   "the old owner stays on it as an admin member.",
                   request=EnvTransfer, responses=EnvSerializer)
    @action(detail=True, methods=["post"], url_path="transfer", url_name="transfer")
    def transfer(self, request, pk=None):
        env = self.get_object()
        data = parse(EnvTransfer, request)
        sharing.env_transfer(env=env, new_owner=data["owner"], by=request.user)
        return Response(self.current(env).data)
