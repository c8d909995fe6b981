"""What each VM's node refused it: packets to the outside while its Env denies
outgoing traffic, packets to the addresses on its blacklist, and packets to networks
no VM may reach (private, the nodes', the site's services: engines.network.addresses).

The node's firewall counts them per VM address (Firewall.drops_per_vm); the VM page
shows them and /metrics exports them. Asking a node is bounded in time and reused
for a few seconds (ttportal.probes): a node that cannot be asked is None, never an
error.
"""

from __future__ import annotations

from engines.network.firewall import DROP_REASONS
from nodes.models import Node
from nodes.registry import drops_per_vm
from ttportal import probes

REASONS = DROP_REASONS


def _drops(node: Node):
    return lambda: drops_per_vm(node)


def drops_of_nodes(nodes: list[Node]) -> dict[int, dict[str, dict[str, int]] | None]:
    """node id -> (VM ip -> {reason: packets}), or None for a node that could not be asked."""
    outcomes = probes.ask_many({("drops", node.pk): _drops(node) for node in nodes})
    return {node.pk: outcomes[("drops", node.pk)].value if outcomes[("drops", node.pk)].ok else None
            for node in nodes}


def blocked_counts(node: Node, ip: str | None) -> dict[str, int] | None:
    """{reason: packets} for the VM at `ip` on `node`; None when the node cannot be asked.
    A VM its firewall has no counter for (one created before the firewall counted every
    VM, until the node's next rebuild) was refused nothing."""
    if not ip:
        return None
    drops = drops_of_nodes([node])[node.pk]
    if drops is None:
        return None
    counts = drops.get(ip) or {}
    return {reason: int(counts.get(reason, 0)) for reason in REASONS}
