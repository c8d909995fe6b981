from django.apps import AppConfig


class EnvsConfig(AppConfig):
    name = "envs"
    verbose_name = "Environments"

    def ready(self) -> None:
        from envs import kinds, sleep, steps
        from envs.metrics import EnvCollector
        from operations import registry, worker
        from ttportal import metrics
        from vms import env_wake

        kinds.register()
        registry.register_steps(steps.STEPS)
        registry.register_steps(sleep.steps())
        # Each task cluster serves its nodes' waker and reads their port counters (sleep when idle).
        worker.on_cluster_start(sleep.start)
        # Starting or going into a VM of a sleeping Env wakes it (vms/env_wake.py).
        env_wake.register(sleep.env_wake)
        metrics.register(EnvCollector())
        # Whose Envs' audit events a user reads: the Envs they own or are an admin of.
        from audit import scope
        from envs.sharing import envs_administered

        scope.register_env_scope(envs_administered)
