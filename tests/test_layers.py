"""The layers hold: no import cycles among the project's modules, no edge between apps that
points up the target order, the runner imports no services, and engines/ drivers never
import Django (tests/engines/test_no_django.py).

An edge is an import (inside functions too: a cycle hidden in a function body is still
one) or a string that names a project function: a django-q2 task path handed to
async_task or a wrapper of it, a schedule's `func`. The schedules that migrations create
count with the task path they end up with (after the migrations that moved tasks).

`pytest -s tests/test_layers.py` prints the app graph.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The target order (docs/architecture.md), bottom to top: an app may use only apps below
# it. Apps not made yet are skipped. envfile (Env files, plain Python) is the bottom: the
# tt command imports it without the server.
ORDER = ("envfile", "engines", "ttportal", "audit", "operations", "nodes", "accounts", "vms", "envs",
         "notifications")
APPS = tuple(app for app in ORDER if (ROOT / app / "__init__.py").exists())
RANK = {app: i for i, app in enumerate(ORDER)}

# The roof may name every app: INSTALLED_APPS and the settings that name apps' enums, the
# root URLconfs, the servers' entry points.
ROOF = frozenset({"ttportal.settings", "ttportal.urls", "ttportal.api_urls", "ttportal.portal_urls",
                  "ttportal.asgi", "ttportal.wsgi"})

# Upward edges still in the code, each (from module, to module) with why it is still
# there: none (docs/architecture.md says how each former one was turned around). A new
# upward edge fails the test, and so does a listed edge that has gone.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}

# Model relations that point up the order. They are declared by name ("envs.Env"), so no
# import follows them, yet code that walks them uses the model above (vms reaches
# envs.Env through Vm.env: vms.models.env_model()). So that no such edge hides, each is
# listed here with why the table links upward; a new one fails the test.
DECLARED_UPWARD_RELATIONS: dict[str, str] = {
    "vms.Vm.env -> envs.Env": "a VM belongs to an Env; vms asks Env only its status, "
                              "objects.live() and objects.reach_of()",
    "vms.WarmPool.env -> envs.Env": "a pool keeps its spares in an Env of its own",
    "operations.Operation.env -> envs.Env": "what an operation acted on, for its history",
    "operations.Operation.vm -> vms.Vm": "what an operation acted on, for its history",
    "operations.Operation.snapshot -> vms.Snapshot": "what an operation acted on, for its history",
    "operations.Operation.node -> nodes.Node": "the node whose queue runs the operation",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" not in path.parts:
                found[_module_name(path)] = path
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            # `from a.b import c` is the module a.b.c when there is one, else a.b.
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
                break
    return targets


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


# --- strings that name a function: task paths, schedules' funcs --------------------------

DOTTED = re.compile(r"^[a-z_]+(\.[A-Za-z_]\w*)+$")


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def resolve(dotted: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted string names a function (or class, or value) of, or None when it
    names none: `vms.tasks.warm_tend` -> vms.tasks."""
    if not DOTTED.match(dotted) or dotted.split(".")[0] not in APPS:
        return None
    module, _, rest = dotted.rpartition(".")
    attribute = rest
    while module and module not in modules:
        module, _, attribute = module.rpartition(".")
    if not module or module == dotted or attribute not in _top_level_names(modules[module]):
        return None
    return module


def named_functions(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules whose functions this module names in a string."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            module = resolve(node.value, modules)
            if module is not None:
                found.add(module)
    return found


def dangling_task_paths(path: Path, modules: dict[str, Path]) -> set[str]:
    """Strings that look like a task path (`app.tasks.name`) but name nothing."""
    return {
        node.value for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and re.match(r"^[a-z_]+\.tasks\.\w+$", node.value) and node.value.split(".")[0] in APPS
        and resolve(node.value, modules) is None
    }


def moved_tasks() -> dict[str, str]:
    """Task paths a migration rewrote in the schedules (old -> new)."""
    moved = {}
    for path in sorted(ROOT.glob("*/migrations/*.py")):
        if path.parts[-3] in APPS and "MOVED_TASKS" in path.read_text():
            module = importlib.import_module(_module_name(path))
            moved.update(module.MOVED_TASKS)
    return moved


def migration_schedules() -> list[tuple[str, str]]:
    """(migration, the func its schedules run now) for each schedule a migration creates."""
    moved = moved_tasks()
    found = []
    for path in sorted(ROOT.glob("*/migrations/*.py")):
        if path.parts[-3] not in APPS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict):
                pairs = zip(node.keys, node.values, strict=True)
            elif isinstance(node, ast.Call):
                pairs = ((ast.Constant(k.arg), k.value) for k in node.keywords)
            else:
                continue
            for key, value in pairs:
                if (isinstance(key, ast.Constant) and key.value == "func"
                        and isinstance(value, ast.Constant) and isinstance(value.value, str)):
                    found.append((_module_name(path), moved.get(value.value, value.value)))
    return found


def edge_graph() -> dict[str, set[str]]:
    """Module -> the modules it uses: imports, and the functions it names in strings."""
    modules = project_modules()
    graph = {name: imports_of(name, path, modules) | named_functions(path, modules) - {name}
             for name, path in modules.items()}
    for migration, func in migration_schedules():
        target = resolve(func, modules)
        if target is not None:
            graph.setdefault(migration, set()).add(target)
    return graph


def app_of(module: str) -> str:
    return module.split(".")[0]


def upward_edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {
        (source, target) for source, targets in graph.items() for target in targets
        if source not in ROOF and RANK[app_of(target)] > RANK[app_of(source)]
    }


def app_graph(graph: dict[str, set[str]]) -> dict[str, Counter]:
    """App -> the apps it uses, with how many module edges go there."""
    apps: dict[str, Counter] = {app: Counter() for app in APPS}
    for source, targets in graph.items():
        if source in ROOF:
            continue
        for target in targets:
            if app_of(source) != app_of(target):
                apps[app_of(source)][app_of(target)] += 1
    return apps


def draw(apps: dict[str, Counter]) -> str:
    lines = []
    for app in sorted(apps, key=RANK.get, reverse=True):
        uses = sorted(apps[app].items(), key=lambda item: RANK[item[0]], reverse=True)
        shown = ", ".join(f"{other} {count}" + (" UP" if RANK[other] > RANK[app] else "")
                          for other, count in uses)
        lines.append(f"{app:>13} -> {shown or '(nothing)'}")
    return "\n".join(lines)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_it_finds_no_import_cycle_among_the_project_modules():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_edge_between_apps_points_up(capsys):
    graph = edge_graph()
    with capsys.disabled():
        print("\nThe app graph, top to bottom (app -> apps it uses: module edges; UP: against the order;")
        print("the roof, ttportal's settings, root URLconfs and asgi/wsgi, not counted)")
        print(draw(app_graph(graph)))
    up = upward_edges(graph)
    assert sorted(up - ALLOWED_UPWARD.keys()) == [], "edges that point up"
    assert sorted(ALLOWED_UPWARD.keys() - up) == [], "allowed upward edges that are gone: drop them"


def upward_relations() -> set[str]:
    from django.apps import apps

    found = set()
    for model in apps.get_models():
        app = model._meta.app_label
        if app not in RANK:
            continue
        for field in model._meta.get_fields():
            if not field.concrete or field.remote_field is None:
                continue
            target = field.related_model._meta
            if target.app_label in RANK and RANK[target.app_label] > RANK[app]:
                found.add(f"{app}.{model.__name__}.{field.name} -> {target.app_label}.{target.object_name}")
    return found


def test_every_model_relation_that_points_up_is_declared(capsys):
    found = upward_relations()
    with capsys.disabled():
        print("\nModel relations that point up (declared by name; the tables link, no import follows):")
        print("\n".join(f"  {relation}" for relation in sorted(found)))
    assert sorted(found - DECLARED_UPWARD_RELATIONS.keys()) == [], "undeclared relations that point up"
    assert sorted(DECLARED_UPWARD_RELATIONS.keys() - found) == [], "declared relations that are gone"


def test_every_task_path_names_a_task():
    modules = project_modules()
    assert {name: dangling_task_paths(path, modules) for name, path in modules.items()
            if dangling_task_paths(path, modules)} == {}
    assert [(m, f) for m, f in migration_schedules() if resolve(f, modules) is None] == []


def test_the_layer_check_sees_a_task_path_and_an_import_inside_a_function():
    graph = edge_graph()
    assert "vms.tasks" in graph["vms.warm"]  # "vms.tasks.warm_tend", a string
    assert "operations.tasks" in graph["operations.runner"]  # "operations.tasks.run_operation"
    assert "vms.warm" in graph["vms.tasks"]  # imported inside warm_tend
    assert "vms.tasks" in graph["vms.migrations.0007_warm_pool"]  # its schedule, as renamed since
    assert upward_edges({"operations.runner": {"envs.models"}}) == {("operations.runner", "envs.models")}
    assert upward_edges({"ttportal.settings": {"envs.models"}}) == set()


def test_the_runner_is_a_leaf_that_reaches_no_services_or_steps():
    graph = import_graph()
    below = reachable(graph, "operations.runner") | reachable(graph, "operations.recovery")
    below |= reachable(graph, "operations.worker") | reachable(graph, "operations.recording")
    assert not {m for m in below if m.endswith((".services", ".steps", ".views", ".api", ".admin"))}


def test_engine_drivers_import_no_control_plane_module():
    graph = import_graph()
    engines = [name for name in graph if name == "engines" or name.startswith("engines.")]
    assert {"engines.base", "engines.libvirt.engine", "engines.network.nftables"} <= set(engines)
    for module in engines:
        assert {m for m in reachable(graph, module) if m.split(".")[0] != "engines"} == set(), module


def test_the_env_file_parser_imports_no_other_project_module():
    graph = import_graph()
    modules = [name for name in graph if name == "envfile" or name.startswith("envfile.")]
    assert {"envfile", "envfile.model", "envfile.schema"} <= set(modules)
    for module in modules:
        assert {m for m in reachable(graph, module) if m.split(".")[0] != "envfile"} == set(), module
