from django.apps import AppConfig


class EnvsConfig(AppConfig):
    name = "envs"
    verbose_name = "Environments"

    def ready(self) -> None:
        from envs import kinds, steps
        from envs.metrics import EnvCollector
        from operations import registry
        from ttportal import metrics

        kinds.register()
        registry.register_steps(steps.STEPS)
        metrics.register(EnvCollector())
