from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "VMs, templates and snapshots"

    def ready(self) -> None:
        from operations import registry, runner, worker
        from vms import kinds, steps, tasks, warm, warm_steps

        kinds.register()
        registry.register_steps(steps.STEPS)
        registry.register_steps(warm_steps.STEPS)
        # A create that took spares has their pools refilled once it has ended.
        runner.on_finish(warm.after_operation)
        # The fleet's beat in every worker's keeper (the nodes app takes it over).
        worker.on_beat(tasks.keeper_beat)
