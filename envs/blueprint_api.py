"""/api/blueprints/: saved Env files (envs/blueprints.py). Thin: parse → the service → serialize.

Blueprints are looked up through `visible_to(request.user)`: one not shared with the caller
is a 404; one they only read (shared, published) refuses a change with 403. A launch
answers 202 with the env_create operation, like POST /api/envs/, and takes an
Idempotency-Key the same way.
"""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from envs import blueprints
from envs.models import Blueprint
from envs.serializers import (
    BlueprintCreate,
    BlueprintLaunch,
    BlueprintSerializer,
    BlueprintShare,
    BlueprintUpdate,
)
from operations.api import accepted
from operations.serializers import OperationSerializer
from ttportal.api import idempotency_key, parse
from ttportal.api_query import BoolFilter, StrictFilterSet, TextFilter
from ttportal.api_schema import IDEMPOTENCY_KEY, ErrorSerializer


class BlueprintFilter(StrictFilterSet):
    name = TextFilter(lookup_expr="icontains")
    owner = TextFilter(field_name="owner__username", label="Owner's username")
    published = BoolFilter()

    class Meta:
        model = Blueprint
        fields = ["name", "owner", "published"]


@extend_schema_view(
    list=extend_schema(summary="Blueprints you can see: yours, those shared with you, the published ones"),
    retrieve=extend_schema(summary="One blueprint, with its Env file"),
    destroy=extend_schema(summary="Delete the blueprint (Envs launched from it stay)"),
)
class BlueprintViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                       viewsets.GenericViewSet):
    queryset = Blueprint.objects.none()  # the model, for the schema; get_queryset scopes it
    serializer_class = BlueprintSerializer
    filterset_class = BlueprintFilter
    ordering_fields = ["name", "created_at", "updated_at", "id"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    refuses_on_data = True  # 422: a file's problems (with lines), a name taken, the cap
    rate_limited = frozenset({"launch"})  # 429: env_create's limits on how often one user acts

    def get_queryset(self):
        return (Blueprint.objects.visible_to(self.request.user).select_related("owner")
                .prefetch_related("shared_with_users", "shared_with_groups"))

    def _answer(self, blueprint: Blueprint, code: int = status.HTTP_200_OK) -> Response:
        fresh = self.get_queryset().get(pk=blueprint.pk)
        return Response(self.get_serializer(fresh).data, status=code)

    @extend_schema(request=BlueprintCreate, responses={201: BlueprintSerializer},
                   summary="Save an Env file as a blueprint of yours")
    def create(self, request):
        data = parse(BlueprintCreate, request)
        with transaction.atomic():  # a refused publish saves nothing
            blueprint = blueprints.blueprint_save(by=request.user, text=data["text"], name=data.get("name"),
                                                  description=data.get("description", ""))
            if data.get("published"):
                blueprints.blueprint_publish(blueprint=blueprint, by=request.user)
        return self._answer(blueprint, status.HTTP_201_CREATED)

    @extend_schema(request=BlueprintUpdate, responses={200: BlueprintSerializer},
                   summary="Change the blueprint: its name, description, file, or (staff) whether it is "
                   "published")
    def partial_update(self, request, pk=None):
        blueprint = self.get_object()
        data = dict(parse(BlueprintUpdate, request))
        published = data.pop("published", None)
        with transaction.atomic():  # all of it or nothing
            if data:
                blueprint = blueprints.blueprint_save(blueprint=blueprint, by=request.user, **data)
            if published is not None:
                blueprint = blueprints.blueprint_publish(blueprint=blueprint, by=request.user,
                                                         published=published)
        return self._answer(blueprint)

    def perform_destroy(self, instance):
        blueprints.blueprint_delete(blueprint=instance, by=self.request.user)

    @extend_schema(request=BlueprintShare, responses={200: BlueprintSerializer},
                   summary="Share the blueprint read-only with exactly these users and groups")
    @action(detail=True, methods=["post"])
    def share(self, request, pk=None):
        blueprint = self.get_object()
        data = parse(BlueprintShare, request)
        blueprint = blueprints.blueprint_share(blueprint=blueprint, by=request.user, users=data.get("users"),
                                               groups=data.get("groups"))
        return self._answer(blueprint)

    @extend_schema(
        request=BlueprintLaunch, parameters=[IDEMPOTENCY_KEY],
        responses={202: OpenApiResponse(OperationSerializer, description="Accepted: the Operation to poll."),
                   409: OpenApiResponse(ErrorSerializer, description="No node has room for its VMs.")},
        summary="Launch a copy: a new Env of yours from the blueprint's file",
        description="The Env is yours, whoever owns the blueprint; env_create's quota and limits apply. "
        "The operation's `env` is the new Env's id.")
    @action(detail=True, methods=["post"])
    def launch(self, request, pk=None):
        blueprint = self.get_object()
        data = parse(BlueprintLaunch, request)
        op = blueprints.blueprint_launch(blueprint=blueprint, by=request.user, name=data.get("name"),
                                         idempotency_key=idempotency_key(request))
        return accepted(request, op)
