from django.apps import AppConfig


class EnvsConfig(AppConfig):
    name = "envs"
    verbose_name = "Environments and operations"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from envs import runner, steps, worker
        from envs.metrics import EnvCollector
        from envs.operation_metrics import OperationCollector
        from ttportal import metrics

        runner.register(steps.STEPS)
        # Each new worker process of the task cluster gets its keeper thread.
        post_spawn.connect(worker.on_worker_spawn, dispatch_uid="tt-worker-keeper")
        metrics.register(EnvCollector())
        metrics.register(OperationCollector())
