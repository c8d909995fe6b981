from django.apps import AppConfig


class EnvsConfig(AppConfig):
    name = "envs"
    verbose_name = "Environments"

    def ready(self) -> None:
        from envs import kinds, steps
        from operations import registry

        kinds.register()
        registry.register_steps(steps.STEPS)
