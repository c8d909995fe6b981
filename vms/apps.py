from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "VMs, templates and snapshots"

    def ready(self) -> None:
        from envs import runner
        from nodes.signals import node_prepared
        from ttportal import metrics
        from vms import node_setup, steps, warm, warm_steps
        from vms.metrics import VmCollector

        runner.register(steps.STEPS)
        runner.register(warm_steps.STEPS)
        # A create that took spares has their pools refilled once it has ended.
        runner.on_finish(warm.after_operation)
        # tt_prepare_node: rewire the node's VMs, install the templates asked for.
        node_prepared.connect(node_setup.after_node_prepared, dispatch_uid="vms-node-prepared")
        metrics.register(VmCollector())
