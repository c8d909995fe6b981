from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from accounts import schema  # noqa: F401  (registers the OpenAPI auth extension)
        from audit.signals import register_admin_verb

        # Quota edits in the admin are the audit log's quota.add/change/delete.
        for label in ("accounts.UserQuota", "accounts.GroupQuota"):
            register_admin_verb(label, "quota")
        register_admin_verb("accounts.ApiToken", "token", delete="token.revoke")
        register_admin_verb("accounts.SshKey", "sshkey")
