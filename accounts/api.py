"""Personal API tokens: create (the secret is shown once), list, revoke; personal SSH
public keys: add, list, delete; one's quotas.

Creating one needs a password or a browser session, not a token: a token that
leaked could otherwise mint itself successors and outlive its own expiry.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import services
from accounts.lockout import PasswordAuthentication
from accounts.models import ApiToken, SshKey
from accounts.quotas import report
from accounts.serializers import (
    NewTokenSerializer,
    QuotaSerializer,
    SshKeyCreate,
    SshKeySerializer,
    TokenCreate,
    TokenSerializer,
)
from ttportal.api import parse
from ttportal.api_query import StrictFilterSet, TextFilter


class TokenFilter(StrictFilterSet):
    name = TextFilter(help_text="The token's name, exactly.")

    class Meta:
        model = ApiToken
        fields = ["name"]


class SshKeyFilter(StrictFilterSet):
    name = TextFilter(lookup_expr="icontains")
    fingerprint = TextFilter(help_text='"SHA256:…", exactly.')

    class Meta:
        model = SshKey
        fields = ["name", "fingerprint"]


@extend_schema_view(
    list=extend_schema(summary="Your API tokens (never their secrets)"),
    retrieve=extend_schema(summary="One of your API tokens"),
)
class TokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = ApiToken.objects.none()  # the model, for the schema; get_queryset scopes it
    serializer_class = TokenSerializer
    lookup_field = "public_id"
    lookup_url_kwarg = "id"
    ordering_fields = ["created", "expiry", "last_used_at", "name"]
    filterset_class = TokenFilter
    # 429: how often one makes tokens, how many one holds, failed passwords (accounts/lockout.py).
    rate_limited = frozenset({"create"})

    def get_queryset(self):
        return ApiToken.objects.visible_to(self.request.user).unexpired().select_related("user")

    def get_authenticators(self):
        if self.request is not None and self.request.method == "POST":
            return [PasswordAuthentication(), SessionAuthentication()]
        return super().get_authenticators()

    @extend_schema(
        request=TokenCreate,
        responses={201: OpenApiResponse(NewTokenSerializer, description="The token; `token` is the secret.")},
        summary="Create an API token (password or browser session, not a token)",
        auth=[{"basicAuth": []}, {"cookieAuth": []}],
    )
    def create(self, request):
        data = parse(TokenCreate, request)
        token, secret = services.token_create(user=request.user, name=data["name"],
                                              expires_in=data.get("expires_in"))
        token.token = secret
        body = NewTokenSerializer(token, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Revoke the token: it stops working at once")
    def destroy(self, request, *args, **kwargs):
        services.token_revoke(token=self.get_object(), by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(summary="Your SSH public keys (VMs made after a change get the keys of then)"),
    retrieve=extend_schema(summary="One of your SSH keys"),
    destroy=extend_schema(summary="Delete the key: VMs made from now on no longer get it"),
)
class SshKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                    viewsets.GenericViewSet):
    queryset = SshKey.objects.none()  # the model, for the schema; get_queryset scopes it
    serializer_class = SshKeySerializer
    ordering_fields = ["name", "created"]
    filterset_class = SshKeyFilter
    refuses_on_data = True  # 422: key data that does not decode, a duplicate, the limit

    def get_queryset(self):
        # Personal, like tokens: staff see and delete others' keys in the admin only.
        return SshKey.objects.filter(user=self.request.user)

    @extend_schema(
        request=SshKeyCreate,
        responses={201: SshKeySerializer},
        summary="Add an SSH public key; VMs made from now on get it for the tt user",
    )
    def create(self, request):
        data = parse(SshKeyCreate, request)
        key = services.ssh_key_add(user=request.user, public_key=data["public_key"], name=data.get("name"))
        body = SshKeySerializer(key, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        services.ssh_key_delete(key=instance, by=self.request.user)


class QuotaView(APIView):
    """GET /api/quota/: your limits and what you use (staff too: their own)."""

    @extend_schema(
        responses=QuotaSerializer,
        summary="Your quotas: each limit, what you use, where the limit comes from",
    )
    def get(self, request):
        return Response(QuotaSerializer.of(request.user, report(request.user)))
