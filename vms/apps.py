from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "VMs, templates and snapshots"

    def ready(self) -> None:
        from envs import runner
        from vms import steps, warm, warm_steps

        runner.register(steps.STEPS)
        runner.register(warm_steps.STEPS)
        # A create that took spares has their pools refilled once it has ended.
        runner.on_finish(warm.after_operation)
