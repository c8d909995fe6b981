"""A contract test from the client's side: openapi-python-client generates a Python
client from the live /api/schema/, and a whole user scenario runs through that
generated client only. Every answer must have the status the scenario expects and
parse into the generated model (never `parsed is None`), and may carry no field the
schema leaves out.

The generator must take the schema without a warning: a warning means it skipped or
guessed part of the schema, which is a schema problem to fix on the server.

The server is pytest-django's `live_server` (as in test_api_schemathesis.py); tasks
run inline (conftest), so an operation is done when its request has answered, but the
scenario still polls it through the client, as a real client would.

Hand-written HTTP (not through the generated client), and why:
- GET /api/schema/: the client is generated from it, so it cannot exist yet.
- POST /api/tokens/ needs HTTP basic auth, which the generated client has no support
  for (AuthenticatedClient only sends "<prefix> <token>"): httpx's own basic auth is
  passed through the generated Client's `httpx_args`; the call itself goes through
  the generated `tokens_create` module.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import attrs
import httpx
import yaml

GENERATOR = Path(sys.executable).parent / "openapi-python-client"
POLL_INTERVAL = 0.02  # seconds between two polls of an unfinished operation
POLL_LIMIT = 10.0  # seconds an operation may take before the scenario gives up
PASSWORD = "pw-alice"  # make_user() in conftest: "pw-" + username


# --- generating the client ----------------------------------------------------------------


class Generated:
    """The generated package, its modules looked up by tag and operation id."""

    def __init__(self, package: ModuleType, schema: dict, output: str):
        self.package = package
        self.name = package.__name__
        self.schema = schema
        self.output = output
        self.models = importlib.import_module(f"{self.name}.models")

    def api(self, tag: str, operation_id: str) -> ModuleType:
        try:
            return importlib.import_module(f"{self.name}.api.{tag}.{operation_id}")
        except ImportError as exc:  # the generator skipped the operation: it says why
            raise AssertionError(f"no generated {tag}.{operation_id}:\n{self.output}") from exc


def _forget(name: str) -> None:
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def generate(live_server, tmp_path: Path, request) -> Generated:
    # Served as YAML unless asked otherwise: keep what is served, under the matching extension.
    answer = httpx.get(f"{live_server.url}/api/schema/", timeout=30)
    assert answer.status_code == 200, answer.text[:500]
    suffix = ".json" if "json" in answer.headers.get("content-type", "") else ".yaml"
    schema_file = tmp_path / f"schema{suffix}"
    schema_file.write_bytes(answer.content)

    # No --output-path: with `--meta none` the package is written straight into the output
    # path and named after it; without one, the generator names it after the schema's title
    # (in the working directory), which the test then discovers.
    out = tmp_path / "generated"
    out.mkdir()
    # The generator's post hooks run `ruff` from PATH; without it they would print warnings of
    # their own, not about the schema.
    env = {**os.environ, "PATH": f"{GENERATOR.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(
        [str(GENERATOR), "generate", "--path", str(schema_file), "--meta", "none"],
        cwd=out, env=env, capture_output=True, text=True, timeout=120,
    )
    # Its warnings go to stderr, and it exits 0 with them; the paths are the test's own.
    output = f"exit status {run.returncode}\n{run.stdout}{run.stderr}".replace(str(tmp_path), "<tmp>")
    packages = [p for p in out.iterdir() if (p / "__init__.py").is_file()]
    assert len(packages) == 1, f"the generator made no single package (exit {run.returncode}):\n{output}"
    name = packages[0].name

    _forget(name)  # another test's generation of the same name
    request.addfinalizer(lambda: _forget(name))
    sys.path.insert(0, str(out))
    request.addfinalizer(lambda: sys.path.remove(str(out)))
    importlib.invalidate_caches()
    return Generated(importlib.import_module(name), yaml.safe_load(answer.content), output)


def generator_problems(output: str) -> list[str]:
    """The lines in which the generator warns or errs."""
    return [line for line in output.splitlines() if re.search(r"warning|error", line, re.IGNORECASE)]


# --- checking answers ------------------------------------------------------------------------


def undeclared(value, path: str = "$") -> list[str]:
    """Fields the server sent that the schema does not declare: the generated models keep
    them in `additional_properties`. Models that are nothing but additional properties
    (a map such as Error.errors) declare exactly that and are not reported."""
    found: list[str] = []
    if attrs.has(type(value)):
        declared = [f.name for f in attrs.fields(type(value)) if f.name != "additional_properties"]
        extra = getattr(value, "additional_properties", {})
        if declared and extra:
            found.append(f"{path} ({type(value).__name__}): {sorted(extra)}")
        for name in declared:
            found += undeclared(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += undeclared(item, f"{path}[{i}]")
    return found


def parsed(response, status: int, model: type):
    """The answer's body as `model`, once its status is `status` and it parsed."""
    body = response.content[:2000]
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {body!r}"
    assert response.parsed is not None, f"{status} did not parse (undocumented answer?): {body!r}"
    assert isinstance(response.parsed, model), (
        f"{status} parsed as {type(response.parsed).__name__}, not {model.__name__}: {body!r}"
    )
    extra = undeclared(response.parsed)
    assert not extra, f"the server sent fields the schema does not declare: {extra}"
    return response.parsed


class Scenario:
    """The generated client, authenticated as one user, and short ways to call it."""

    def __init__(self, gen: Generated, client):
        self.gen = gen
        self.client = client
        self.m = gen.models

    def call(self, tag: str, operation_id: str, status: int, model: type, *args, **kwargs):
        response = self.gen.api(tag, operation_id).sync_detailed(*args, client=self.client, **kwargs)
        return parsed(response, status, model)

    def wait(self, op):
        """Poll the operation through the client until it is done; it must have succeeded."""
        deadline = time.monotonic() + POLL_LIMIT
        while True:
            op = self.call("operations", "operations_retrieve", 200, self.m.Operation, op.id)
            if op.is_done:
                break
            assert time.monotonic() < deadline, f"operation {op.id} ({op.kind}) still {op.status}"
            time.sleep(POLL_INTERVAL)
        assert op.status == self.m.OperationStatusEnum.SUCCEEDED, (op.error_code, op.error_message, op.log)
        return op

    def act(self, tag: str, operation_id: str, *args, **kwargs):
        """A long action: 202 with an Operation, polled until it succeeded."""
        return self.wait(self.call(tag, operation_id, 202, self.m.Operation, *args, **kwargs))

    def body_model(self, tag: str, operation_id: str, field: str) -> type:
        """The generated model of the operation's body that has `field`: the body may be one
        model or a oneOf of several (one per way to call it), each named by the generator."""
        module = self.gen.api(tag, operation_id)
        annotation = inspect.signature(module.sync_detailed).parameters["body"].annotation
        names = re.findall(r"\w+", str(annotation))
        models = [getattr(module, n) for n in names if attrs.has(getattr(module, n, None))]
        having = [c for c in models if field in attrs.fields_dict(c)]
        assert len(having) == 1, f"{operation_id}: no single body model with {field!r} in {annotation}"
        return having[0]

    def vm(self, vm_id: int):
        return self.call("vms", "vms_retrieve", 200, self.m.Vm, vm_id)


# --- the tests -----------------------------------------------------------------------------------


def test_the_generator_takes_the_schema_without_a_warning(live_server, tmp_path, request):
    gen = generate(live_server, tmp_path, request)
    problems = generator_problems(gen.output)
    assert not problems and gen.output.startswith("exit status 0\n"), (
        "openapi-python-client warned about /api/schema/:\n" + gen.output
    )
    assert gen.name == "tt_portal_api_client"  # named after the schema's title

    # Every security scheme an operation names is declared (a client can only send what is declared).
    declared = set(gen.schema.get("components", {}).get("securitySchemes", {}))
    missing = {
        f"{method.upper()} {path}: {name}"
        for path, item in gen.schema["paths"].items()
        for method, operation in item.items()
        for requirement in operation.get("security", [])
        for name in requirement
        if name not in declared
    }
    assert not missing, f"operations name schemes components.securitySchemes lacks: {sorted(missing)}"


def test_a_whole_scenario_through_the_generated_client(live_server, alice, template, tmp_path, request):
    started = time.monotonic()
    gen = generate(live_server, tmp_path, request)
    m = gen.models
    base_url = live_server.url

    # A token, by password: basic auth is httpx's, passed through the generated Client (see above).
    with gen.package.Client(base_url=base_url, httpx_args={"auth": ("alice", PASSWORD)}) as by_password:
        new_token = Scenario(gen, by_password).call(
            "tokens", "tokens_create", 201, m.NewToken, body=m.TokenCreateRequest(name="contract test")
        )
    assert new_token.token and new_token.name == "contract test"

    # Without credentials: a parsed 401.
    with gen.package.Client(base_url=base_url) as anonymous:
        refused = Scenario(gen, anonymous).call("templates", "templates_list", 401, m.Error)
    assert refused.code == "not_authenticated"

    with gen.package.AuthenticatedClient(base_url=base_url, token=new_token.token, prefix="Token") as client:
        s = Scenario(gen, client)

        tokens = s.call("tokens", "tokens_list", 200, m.PaginatedTokenList)
        assert [(t.name, t.current) for t in tokens.results] == [("contract test", True)]

        templates = s.call("templates", "templates_list", 200, m.PaginatedTemplateList)
        assert [t.name for t in templates.results] == [template.name]
        tpl = s.call("templates", "templates_retrieve", 200, m.Template, templates.results[0].id)

        # Refusals parse into Error, with the field at fault.
        bad = s.call("envs", "envs_create", 400, m.Error, body=m.EnvCreateRequest(name="empty", vms=[]))
        assert (bad.code, bad.field) == ("invalid", "vms"), bad
        bad = s.call("envs", "envs_create", 400, m.Error, body=m.EnvCreateRequest(
            name="Bad_Name", vms=[m.NewVmRequest(name="vm0", template=tpl.name)]))
        assert (bad.code, bad.field) == ("invalid", "name"), bad
        assert "name" in bad.errors.additional_properties, bad
        missing = s.call("envs", "envs_retrieve", 404, m.Error, 999_999)
        assert missing.code == "not_found"

        # An Env of two VMs, one with forwarded ports.
        op = s.act("envs", "envs_create", body=m.EnvCreateRequest(name="contract", lifetime=3600, vms=[
            m.NewVmRequest(name="web", template=tpl.name, ports=[80, "53/udp"]),
            m.NewVmRequest(name="db", template=tpl.name),
        ]))
        assert op.kind == m.OperationKindEnum.ENV_CREATE and isinstance(op.env, int)
        env = s.call("envs", "envs_retrieve", 200, m.Env, op.env)
        assert (env.name, env.owner, env.status) == ("contract", "alice", m.EnvStatusEnum.ACTIVE)
        assert sorted(v.name for v in env.vms) == ["db", "web"]
        envs = s.call("envs", "envs_list", 200, m.PaginatedEnvList, live=True)
        assert [e.id for e in envs.results] == [env.id]
        # Well-formed, but the name is taken: 422, with the field.
        taken = s.call("envs", "envs_create", 422, m.Error, body=m.EnvCreateRequest(
            name="contract", vms=[m.NewVmRequest(name="vm0", template=tpl.name)]))
        assert (taken.code, taken.field) == ("invalid", "name"), taken
        # Starting an Env whose VMs all run changes nothing: 200 with the Env, no operation.
        same = s.call("envs", "envs_start_create", 200, m.Env, env.id)
        assert same.id == env.id and not same.is_stopped

        vms = s.call("vms", "vms_list", 200, m.PaginatedVmList, env=env.id)
        by_name = {v.name: v for v in vms.results}
        assert sorted(by_name) == ["db", "web"]
        assert {v.status for v in vms.results} == {m.VmStatusEnum.RUNNING}
        web = s.vm(by_name["web"].id)
        ports = {(p.protocol, p.inner_port): p.public_port for p in web.ports}
        assert set(ports) == {(m.ProtocolEnum.TCP, 80), (m.ProtocolEnum.UDP, 53)}, web.ports
        assert all(20000 <= public <= 20999 for public in ports.values()), ports

        # Extend: a later end.
        extend = s.body_model("envs", "envs_extend_create", "lifetime")
        op = s.act("envs", "envs_extend_create", env.id, body=extend(lifetime=7200))
        assert op.kind == m.OperationKindEnum.ENV_EXTEND
        extended = s.call("envs", "envs_retrieve", 200, m.Env, env.id)
        assert extended.end_at - env.end_at > timedelta(minutes=50), (env.end_at, extended.end_at)

        # Ports: 80 keeps its public port, 53/udp goes, 8080 comes.
        s.act("vms", "vms_ports_update", web.id, body=m.PortsChangeRequest(ports=[80, "8080/tcp"]))
        web = s.vm(web.id)
        now = {(p.protocol, p.inner_port): p.public_port for p in web.ports}
        assert set(now) == {(m.ProtocolEnum.TCP, 80), (m.ProtocolEnum.TCP, 8080)}, web.ports
        assert now[m.ProtocolEnum.TCP, 80] == ports[m.ProtocolEnum.TCP, 80]
        # The same ports again change nothing: 200 with the VM.
        same = s.call("vms", "vms_ports_update", 200, m.Vm, web.id,
                      body=m.PortsChangeRequest(ports=["8080/tcp", 80]))
        assert {(p.protocol, p.inner_port): p.public_port for p in same.ports} == now

        s.act("vms", "vms_blacklist_update", web.id, body=m.BlacklistRequest(addresses=["192.0.2.7"]))
        assert "192.0.2.7" in str(s.vm(web.id).net_blacklist)

        s.act("vms", "vms_stop_create", web.id)
        assert s.vm(web.id).status == m.VmStatusEnum.STOPPED
        s.act("vms", "vms_start_create", web.id)
        assert s.vm(web.id).status == m.VmStatusEnum.RUNNING
        # Starting it again changes nothing: 200 with the VM, no operation.
        same = s.call("vms", "vms_start_create", 200, m.Vm, web.id)
        assert (same.id, same.status) == (web.id, m.VmStatusEnum.RUNNING)

        # Snapshot, apply it, destroy it.
        op = s.act("vms", "vms_snapshots_create", web.id, body=m.SnapshotCreateRequest(name="s1"))
        assert isinstance(op.snapshot, int), op
        snap = s.call("snapshots", "snapshots_retrieve", 200, m.Snapshot, op.snapshot)
        assert (snap.name, snap.vm, snap.status) == ("s1", web.id, m.SnapshotStatusEnum.READY)
        snaps = s.call("snapshots", "snapshots_list", 200, m.PaginatedSnapshotList, vm=web.id)
        assert [x.id for x in snaps.results] == [snap.id]
        s.act("snapshots", "snapshots_apply_create", snap.id)
        assert s.vm(web.id).status == m.VmStatusEnum.RUNNING
        s.act("snapshots", "snapshots_destroy_create", snap.id)
        gone = s.call("snapshots", "snapshots_retrieve", 404, m.Error, snap.id)
        assert gone.code == "not_found"

        # The Env's operations, through the filter.
        ops = s.call("operations", "operations_list", 200, m.PaginatedOperationList,
                     env=env.id, page_size=100)
        assert {o.env for o in ops.results} == {env.id}
        assert {o.status for o in ops.results} == {m.OperationStatusEnum.SUCCEEDED}
        Kind = m.OperationKindEnum
        assert {o.kind for o in ops.results} >= {
            Kind.ENV_CREATE, Kind.ENV_EXTEND, Kind.VM_SET_PORTS, Kind.VM_SET_BLACKLIST, Kind.VM_STOP,
            Kind.VM_START,
            Kind.SNAPSHOT_CREATE, Kind.SNAPSHOT_APPLY, Kind.SNAPSHOT_DESTROY,
        }
        assert len([o for o in ops.results if o.kind == Kind.VM_START]) == 1  # the no-op start made none

        # Destroy the Env.
        op = s.act("envs", "envs_destroy_create", env.id)
        assert op.kind == m.OperationKindEnum.ENV_DESTROY
        destroyed = s.call("envs", "envs_retrieve", 200, m.Env, env.id)
        assert destroyed.status == m.EnvStatusEnum.DESTROYED and destroyed.destroyed_at is not None
        assert destroyed.vms == []

        # Save the Env's shape as a blueprint, then launch a copy of it.
        text = "name: copy\nlifetime: 1h\nvms:\n  - name: web\n    template: tt/busybox\n"
        bad = s.call("blueprints", "blueprints_create", 422, m.Error,
                     body=m.BlueprintCreateRequest(text=text.replace("web", "Web")))
        assert bad.field == "vms[0].name" and bad.line == 4
        bp = s.call("blueprints", "blueprints_create", 201, m.Blueprint,
                    body=m.BlueprintCreateRequest(text=text, description="one web VM"))
        assert (bp.name, bp.env_name, bp.mine, bp.published) == ("copy", "copy", True, False)
        bp = s.call("blueprints", "blueprints_partial_update", 200, m.Blueprint, bp.id,
                    body=m.PatchedBlueprintUpdateRequest(name="web-copy"))
        listed = s.call("blueprints", "blueprints_list", 200, m.PaginatedBlueprintList)
        assert [b.name for b in listed.results] == ["web-copy"]
        op = s.act("blueprints", "blueprints_launch_create", bp.id,
                   body=m.BlueprintLaunchRequest(name="launched"))
        launched = s.call("envs", "envs_retrieve", 200, m.Env, op.env)
        assert (launched.name, [vm.name for vm in launched.vms]) == ("launched", ["web"])

    assert time.monotonic() - started < 30, "the scenario should stay well under 30 s"
