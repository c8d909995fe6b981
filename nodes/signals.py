"""What the node layer tells the apps above it, so that it never imports them."""

from django.dispatch import Signal

# tt_prepare_node has (re)made a node's pool, network and firewall: sent with `node`, its
# initialised `engine` and the names of the `templates` the operator asked for. The VMs
# live above nodes (vms), so their side is a receiver's: rewire the node's live VMs
# into the new firewall and network, install the templates. Each receiver returns the
# lines to print.
node_prepared = Signal()
