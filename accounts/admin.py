from django.contrib import admin

from accounts.models import ApiToken


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
