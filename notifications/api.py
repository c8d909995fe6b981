"""/api/webhooks/ (list, create: the secret is shown once, delete, test), your delivery
log (/api/notifications/deliveries/) and settings (/api/notifications/settings/, with a
test email). Personal, like API tokens: staff see others' in the admin only.
Thin: parse → notifications.services → serialize."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from envs.api import parse
from notifications import services
from notifications.models import Delivery, Notification, NotificationSettings, Webhook
from notifications.serializers import (
    DeliverySerializer,
    NewWebhookSerializer,
    NotificationSettingsSerializer,
    NotificationSettingsUpdate,
    WebhookCreate,
    WebhookSerializer,
)
from ttportal.api_query import IdFilter, StrictFilterSet, TextFilter


def _queued(request, delivery: Delivery) -> Response:
    """202 with the test delivery as it is now; Location is where to watch it."""
    delivery.refresh_from_db()
    data = DeliverySerializer(delivery, context={"request": request}).data
    return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": str(data["url"])})


_TEST_ANSWER = {202: OpenApiResponse(
    DeliverySerializer, description="Queued: the test delivery (GET its url to see how it went). `skipped` "
    "when there is nothing to send it to (no email address)."
)}


class WebhookFilter(StrictFilterSet):
    name = TextFilter(help_text="The webhook's name, exactly.")

    class Meta:
        model = Webhook
        fields = ["name"]


@extend_schema_view(
    list=extend_schema(summary="Your webhooks (never their secrets)"),
    retrieve=extend_schema(summary="One of your webhooks"),
    destroy=extend_schema(summary="Delete the webhook: nothing more is sent to it"),
)
class WebhookViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                     viewsets.GenericViewSet):
    queryset = Webhook.objects.none()  # the model, for the schema; get_queryset scopes it
    serializer_class = WebhookSerializer
    ordering_fields = ["name", "created"]
    filterset_class = WebhookFilter
    refuses_on_data = True  # 422: a URL we do not send to, a name taken, the limit
    rate_limited = frozenset({"test"})  # 429: one test per channel per TT_RATE_TEST_NOTIFICATION

    def get_queryset(self):
        return Webhook.objects.filter(user=self.request.user)

    @extend_schema(
        request=WebhookCreate,
        responses={201: OpenApiResponse(NewWebhookSerializer, description="The webhook; `secret` signs its "
                                        "bodies and is shown only in this answer.")},
        summary="Add a webhook: notifications are POSTed to it as signed JSON",
    )
    def create(self, request):
        data = parse(WebhookCreate, request)
        hook, secret = services.webhook_create(user=request.user, endpoint=data["endpoint"],
                                               name=data.get("name"))
        hook.secret = secret
        body = NewWebhookSerializer(hook, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        services.webhook_delete(webhook=instance, by=self.request.user)

    @extend_schema(request=None, responses=_TEST_ANSWER,
                   summary="Send a test notification to the webhook, the way real ones go")
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        hook = self.get_object()
        delivery = services.send_test_notification(user=request.user, channel=Delivery.Channel.WEBHOOK,
                                                   webhook=hook)
        return _queued(request, delivery)


class DeliveryFilter(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=Delivery.Status.choices)
    channel = django_filters.ChoiceFilter(choices=Delivery.Channel.choices)
    event = django_filters.ChoiceFilter(field_name="notification__kind", choices=Notification.Kind.choices)
    webhook = IdFilter(field_name="webhook_id")

    class Meta:
        model = Delivery
        fields = ["status", "channel", "event", "webhook"]


@extend_schema_view(
    list=extend_schema(summary="Notifications sent to you: each delivery, its status and last error"),
    retrieve=extend_schema(summary="One delivery of a notification to you"),
)
class DeliveryViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Delivery.objects.none()
    serializer_class = DeliverySerializer
    filterset_class = DeliveryFilter
    ordering_fields = ["created_at", "id"]

    def get_queryset(self):
        return Delivery.objects.filter(notification__user=self.request.user).select_related("notification")


def _settings_body(user) -> dict:
    prefs = NotificationSettings.of(user)
    facts = {"email": user.email or "", "email_enabled": prefs.email_enabled}
    return NotificationSettingsSerializer(facts).data


class NotificationSettingsView(APIView):
    @extend_schema(responses=NotificationSettingsSerializer, summary="Your notification settings")
    def get(self, request):
        return Response(_settings_body(request.user))

    @extend_schema(request=NotificationSettingsUpdate, responses=NotificationSettingsSerializer,
                   summary="Turn email notifications on or off")
    def put(self, request):
        data = parse(NotificationSettingsUpdate, request)
        services.email_set(user=request.user, enabled=data["email_enabled"])
        return Response(_settings_body(request.user))


class TestEmailView(APIView):
    rate_limited = frozenset({"post"})  # 429: one test per channel per TT_RATE_TEST_NOTIFICATION

    @extend_schema(request=None, responses=_TEST_ANSWER,
                   summary="Send a test notification to your email address, the way real ones go")
    def post(self, request):
        delivery = services.send_test_notification(user=request.user, channel=Delivery.Channel.EMAIL)
        return _queued(request, delivery)
