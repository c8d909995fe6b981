from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "VMs, templates and snapshots"

    def ready(self) -> None:
        from accounts import quotas
        from audit.signals import recorded_by_services
        from nodes.signals import node_prepared
        from operations import registry, runner, worker
        from ttportal import metrics
        from vms import kinds, node_setup, steps, tasks, usage, warm, warm_steps
        from vms.metrics import VmCollector

        kinds.register()
        registry.register_steps(steps.STEPS)
        registry.register_steps(warm_steps.STEPS)
        # A create that took spares has their pools refilled once it has ended.
        runner.on_finish(warm.after_operation)
        # Every worker's keeper beats: the node's free capacity (vms/heartbeat.py), and in
        # the site's cluster the sweep that marks late nodes down (nodes/fleet.py).
        worker.on_beat(tasks.keeper_beat)
        # A node's own cluster beats on a schedule of its own, which nodes' tt_node_worker makes.
        registry.register_task(registry.NODE_BEAT, tasks.node_beat)
        # tt_prepare_node: rewire the node's VMs, install the templates asked for.
        node_prepared.connect(node_setup.after_node_prepared, dispatch_uid="vms-node-prepared")
        metrics.register(VmCollector())
        # accounts shows each owner's use with their limits; vms counts it.
        quotas.register_usage(usage.usage_of)
        # A warm pool's admin form and deletion call vms.warm: warm_pool.save, .delete.
        recorded_by_services("vms.WarmPool")
