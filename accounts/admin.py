from django.contrib import admin
from django.utils.html import format_html_join

from accounts.forms import AdminPasswordSignInForm
from accounts.models import ApiToken, GroupQuota, OidcIdentity, SshKey, UserQuota
from accounts.quotas import NAMES, amount, report


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "created", "expiry", "last_used_at"]
    list_filter = ["expiry"]
    search_fields = ["name", "user__username"]
    # The digest and key are derived from the secret: operators revoke, never edit.
    readonly_fields = ["public_id", "name", "user", "created", "expiry", "last_used_at"]
    exclude = ["digest", "token_key"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(SshKey)
class SshKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "key_type", "bits", "fingerprint", "created"]
    list_filter = ["key_type"]
    search_fields = ["name", "user__username", "fingerprint", "comment"]
    # Keys are added by their owners (who hold the private half); operators may only delete.
    readonly_fields = ["user", "name", "key_type", "bits", "fingerprint", "comment", "public_key", "created"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class QuotaAdminMixin:
    """Overrides of the TT_QUOTA_* defaults: an empty field inherits (accounts/quotas.py:
    the user's own override, else the most generous of their groups', else the default)."""

    limit_fieldsets = (
        ("What one may hold at once (empty: inherit)",
         {"fields": ("envs", "vms", "vcpus", "mem_mb", "disk_mb", "snapshots", "ports")}),
        ("How long an Env may live, in seconds (empty: inherit)", {"fields": ("lifetime", "extension")}),
        (None, {"fields": ("note", "updated_at")}),
    )
    readonly_fields = ("updated_at",)
    list_display_limits = (*NAMES, "updated_at")


@admin.register(UserQuota)
class UserQuotaAdmin(QuotaAdminMixin, admin.ModelAdmin):
    list_display = ("user", *QuotaAdminMixin.list_display_limits)
    list_select_related = ("user",)
    search_fields = ("user__username", "note")
    autocomplete_fields = ("user",)
    readonly_fields = ("updated_at", "in_effect")

    def get_fieldsets(self, request, obj=None):
        shown = ("user", "in_effect") if obj is not None else ("user",)
        return ((None, {"fields": shown}), *self.limit_fieldsets)

    @admin.display(description="in effect now")
    def in_effect(self, quota: UserQuota):
        """The user's limits as resolved (this override, their groups', the defaults) and their use."""
        rows = [(line.label, amount(line.limit, line.unit),
                 "per Env" if line.used is None else amount(line.used, line.unit), line.source)
                for line in report(quota.user)]
        return format_html_join("", "<div>{}: limit {} · in use {} · from {}</div>", rows)


@admin.register(GroupQuota)
class GroupQuotaAdmin(QuotaAdminMixin, admin.ModelAdmin):
    list_display = ("group", *QuotaAdminMixin.list_display_limits)
    list_select_related = ("group",)
    search_fields = ("group__name", "note")
    autocomplete_fields = ("group",)

    def get_fieldsets(self, request, obj=None):
        return ((None, {"fields": ("group",)}), *self.limit_fieldsets)


# Under TT_OIDC_ONLY the admin's sign-in refuses passwords too, but the break-glass accounts'.
admin.site.login_form = AdminPasswordSignInForm


@admin.register(OidcIdentity)
class OidcIdentityAdmin(admin.ModelAdmin):
    """Who signs in as whom through the provider. Moving an identity to another user (a
    local account the person had before single sign-on) is how an operator links them:
    the provider's email is never trusted to do it."""

    list_display = ["user", "subject", "issuer", "created", "last_login"]
    list_select_related = ["user"]
    search_fields = ["user__username", "subject", "issuer"]
    autocomplete_fields = ["user"]
    readonly_fields = ["created", "last_login"]
