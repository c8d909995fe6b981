from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "VMs, templates and snapshots"

    def ready(self) -> None:
        from envs import runner
        from vms import steps

        runner.register(steps.STEPS)
