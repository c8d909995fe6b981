from django.apps import AppConfig


class NodesConfig(AppConfig):
    name = "nodes"
    verbose_name = "Nodes"

    def ready(self) -> None:
        from nodes.metrics import NodeCollector
        from ttportal import metrics

        metrics.register(NodeCollector())
