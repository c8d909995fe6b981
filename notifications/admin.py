"""The delivery log (read-only), notifications, and users' webhooks (operators may
delete one; its secret is never shown)."""

from __future__ import annotations

from django.contrib import admin
from django.utils.text import Truncator

from notifications.models import Delivery, Notification, NotificationSettings, Webhook
from ttportal.admin_base import ReadOnlyTabularInline, ViewOnlyMixin


@admin.register(Delivery)
class DeliveryAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("created_at", "event", "user", "channel", "target", "status", "attempts", "error",
                    "last_attempt_at", "delivered_at")
    list_filter = ("status", "channel", "notification__kind")
    list_select_related = ("notification__user",)
    search_fields = ("target", "notification__user__username", "notification__key", "last_error")
    date_hierarchy = "created_at"
    fields = ("notification", "channel", "webhook", "target", "status", "attempts", "next_attempt_at",
              "last_error", "response_status", "created_at", "queued_at", "last_attempt_at", "delivered_at")
    readonly_fields = fields

    @admin.display(description="event", ordering="notification__kind")
    def event(self, delivery: Delivery) -> str:
        return delivery.notification.kind

    @admin.display(description="user", ordering="notification__user__username")
    def user(self, delivery: Delivery) -> str:
        return delivery.notification.user.get_username()

    @admin.display(description="last error")
    def error(self, delivery: Delivery) -> str:
        return Truncator(delivery.last_error).chars(80)


class DeliveryInline(ReadOnlyTabularInline):
    model = Delivery
    fields = ("channel", "target", "status", "attempts", "last_error", "last_attempt_at", "delivered_at")
    readonly_fields = fields


@admin.register(Notification)
class NotificationAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("created_at", "kind", "user", "env", "operation", "before", "extend_used_at")
    list_filter = ("kind",)
    list_select_related = ("user", "env", "operation")
    search_fields = ("key", "user__username", "env__name")
    date_hierarchy = "created_at"
    fields = ("key", "kind", "user", "env", "operation", "end_at", "before", "payload", "created_at",
              "extend_used_at")
    readonly_fields = fields
    inlines = (DeliveryInline,)


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "endpoint", "created")
    search_fields = ("name", "user__username", "endpoint")
    # Made by their owners, who keep the secret: operators may only delete one.
    fields = ("user", "name", "endpoint", "created")
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(NotificationSettings)
class NotificationSettingsAdmin(admin.ModelAdmin):
    list_display = ("user", "email_enabled")
    list_filter = ("email_enabled",)
    search_fields = ("user__username",)
    readonly_fields = ("user",)

    def has_add_permission(self, request) -> bool:
        return False
