from django.contrib import admin

from accounts.models import ApiToken, SshKey


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
