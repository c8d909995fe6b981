from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Operations"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from operations import worker
        from operations.metrics import OperationCollector
        from ttportal import metrics

        # Each new worker process of the task cluster gets its keeper thread.
        post_spawn.connect(worker.on_worker_spawn, dispatch_uid="tt-worker-keeper")
        metrics.register(OperationCollector())
