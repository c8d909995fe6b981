from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from envs import runner
        from notifications import hooks

        # Told when an operation has ended; it only enqueues (a failure, an expiry).
        runner.on_finish(hooks.operation_finished)
