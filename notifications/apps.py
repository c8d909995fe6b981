from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from notifications import hooks
        from operations import runner

        # Told when an operation has ended; it only enqueues (a failure, an expiry).
        runner.on_finish(hooks.operation_finished)
        from audit.signals import register_admin_verb

        register_admin_verb("notifications.Webhook", "webhook")
