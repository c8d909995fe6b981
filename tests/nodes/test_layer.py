"""nodes sits below the apps that use nodes (accounts, vms, envs, notifications): none of
its modules imports theirs, in a function body or not (tests/test_layers.py reads them).
What the layers above add to nodes they add themselves: vms/node_admin.py, and
vms/node_setup.py answering nodes.signals.node_prepared."""

from __future__ import annotations

from tests.test_layers import import_graph

ABOVE = ("accounts", "vms", "envs", "notifications")


def edges_up(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {
        (module, target)
        for module, targets in graph.items() if module == "nodes" or module.startswith("nodes.")
        for target in targets
        if target.split(".")[0] in ABOVE
    }


def test_nodes_imports_no_app_above_it():
    assert edges_up(import_graph()) == set()


def test_an_edge_up_is_seen():
    graph = {"nodes.admin": {"nodes.models", "vms.models"}, "vms.models": {"nodes.models"}}
    assert edges_up(graph) == {("nodes.admin", "vms.models")}
