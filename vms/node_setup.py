"""The VMs' side of preparing a node (tt_prepare_node, nodes/management/commands): the
command (re)makes the node's pool, network and firewall, then tells the apps above it
through nodes.signals.node_prepared; vms answers here."""

from __future__ import annotations

from nodes.models import Node
from vms.models import Vm, specs_of
from vms.template_install import INSTALLERS


def after_node_prepared(sender, *, node: Node, engine, templates: list[str], **kwargs) -> list[str]:
    """nodes.signals.node_prepared: the node's live VMs rewired into its (re)made firewall
    and network, then the templates asked for installed. The lines to print."""
    live = Vm.objects.live().filter(node=node).exclude(status=Vm.Status.CREATING)
    live = live.for_specs()
    specs = specs_of(live)
    engine.firewall.rebuild(specs)
    for spec in specs:  # DHCP entries too: a recreated network has none
        engine.set_net(spec)
    said = [f"node {node.name}: {len(specs)} VMs rewired"]
    for name in templates:
        template = INSTALLERS[(node.kind, name)](node)
        said.append(f"template {template.name} ready ({template.path})")
    return said
