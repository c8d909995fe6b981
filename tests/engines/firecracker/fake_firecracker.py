"""A fake `firecracker` that holds the driver to Firecracker's own API contract, with no KVM.

Launched by the driver as its `binary` (through a small shell wrapper: see
conftest.py), with the arguments firecracker takes (`--api-sock`, `--id`, and the
jailer's `--start-time-*`). It serves the contract's paths on the unix socket and:

- validates every request body against the OFFICIAL spec's definitions (the YAML
  file at $FAKE_FC_SPEC) with jsonschema, `additionalProperties: false` on every
  object as Firecracker's tests/framework/swagger_validator.py does, `required`
  dropped on PATCH as it does too; an unknown path or method is refused;
- enforces the documented order: pre-boot calls refused once the VM started, post-boot
  calls refused before, one InstanceStart per process, `snapshot/load` only as the
  first call of a fresh process, `snapshot/create` only while paused;
- answers as the spec says: 204 on success, 200 with a spec-valid body for GETs, 400
  with {"fault_message": ...} on a fault;
- opens what Firecracker opens: the kernel, initrd and drive files must exist (under
  the jail's root when $FAKE_FC_ROOT says it was started by the fake jailer), and a
  tap must exist in $FAKE_FC_TAPS (the recording host network's links) when set;
- writes the snapshot and memory files it is asked for (the memory file sparse, as
  big as the guest's memory) and checks them, and the drives they name, on load;
- exits on SendCtrlAltDel (the guest's `reboot=k`), unless $FAKE_FC_GUEST is
  "ignores-ctrl-alt-del"; exits after a failed snapshot load, as Firecracker does;
- records every call and its answer, one JSON object a line, in $FAKE_FC_LOG.

Its stdout is the guest's serial console: it prints a few boot lines there.
"""

from __future__ import annotations

import json
import os
import re
import socketserver
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import yaml
from jsonschema import Draft4Validator

VERSION = "1.16.1"
MIB = 1024 * 1024
MEMORY_MAGIC = b"FAKE-FIRECRACKER-MEMORY\n"

AFTER_START = "The requested operation is not supported after starting the microVM."
BEFORE_START = "The requested operation is not supported before starting the microVM."
LOAD_NOT_FIRST = "Loading a microVM snapshot not allowed after configuring boot-specific resources."

# What the contract and Firecracker's docs say may be called when (paths as in the spec).
PRE_BOOT = {
    ("PUT", "/boot-source"), ("PUT", "/drives/{drive_id}"), ("PUT", "/machine-config"),
    ("PATCH", "/machine-config"), ("PUT", "/network-interfaces/{iface_id}"), ("PUT", "/cpu-config"),
    ("PUT", "/vsock"), ("PUT", "/balloon"), ("PUT", "/mmds/config"), ("PUT", "/entropy"),
    ("PUT", "/pmem/{id}"), ("PUT", "/hotplug/memory"), ("PUT", "/serial"), ("PUT", "/snapshot/load"),
}
POST_BOOT = {
    ("PATCH", "/drives/{drive_id}"), ("PATCH", "/network-interfaces/{iface_id}"), ("PATCH", "/vm"),
    ("PUT", "/snapshot/create"), ("PATCH", "/balloon"), ("PATCH", "/balloon/statistics"),
    ("PATCH", "/pmem/{id}"), ("PATCH", "/hotplug/memory"),
}
# Calls that configure nothing boot-specific: allowed before snapshot/load.
NOT_CONFIGURING = {("PUT", "/logger"), ("PUT", "/metrics")}


NO_TAP = "Could not create the network device: Open tap device failed"


class Fault(Exception):
    """A 400 answer with Firecracker's fault_message."""


def id_mismatch(path_id: str, body_id: str) -> str:
    return f"The id from the path [{path_id}] does not match the id from the body [{body_id}]!"


class Contract:
    """Request and response validators built from the official spec, as Firecracker's own
    tests/framework/swagger_validator.py builds them."""

    def __init__(self, spec_path: str):
        with open(spec_path, encoding="utf-8") as f:
            self.spec = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        self.definitions = self.spec["definitions"]
        self.requests: dict[tuple[str, str], Draft4Validator] = {}
        self.responses: dict[tuple[str, str, str], Draft4Validator] = {}
        self.body_required: dict[tuple[str, str], bool] = {}
        for path, methods in self.spec["paths"].items():
            for method, operation in methods.items():
                method = method.upper()
                for param in operation.get("parameters", []):
                    if param.get("in") == "body" and "schema" in param:
                        schema = self.resolve(param["schema"])
                        if method == "PATCH":
                            schema["required"] = []
                        self.requests[(method, path)] = Draft4Validator(schema)
                        self.body_required[(method, path)] = bool(param.get("required"))
                for status, answer in operation.get("responses", {}).items():
                    if str(status) in ("200", "204") and "schema" in answer:
                        schema = self.resolve(answer["schema"])
                        self.responses[(method, path, str(status))] = Draft4Validator(schema)
                self.requests.setdefault((method, path), None)

    def resolve(self, schema: dict) -> dict:
        if "$ref" in schema:
            return self.resolve(self.definitions[schema["$ref"].rsplit("/", 1)[-1]])
        resolved = dict(schema)
        if "properties" in resolved:
            resolved["properties"] = {k: self.resolve(v) for k, v in resolved["properties"].items()}
        if isinstance(resolved.get("items"), dict):
            resolved["items"] = self.resolve(resolved["items"])
        resolved.setdefault("additionalProperties", False)
        return resolved

    def template_of(self, method: str, path: str) -> str:
        parts = path.split("/")
        for template in self.spec["paths"]:
            tparts = template.split("/")
            if len(tparts) != len(parts) or (method, template) not in self.requests:
                continue
            if all(t == p or (t.startswith("{") and p) for t, p in zip(tparts, parts, strict=True)):
                return template
        raise Fault(f"Invalid request method and/or path: {method} {path}.")

    def check_request(self, method: str, template: str, body) -> None:
        validator = self.requests[(method, template)]
        if validator is None:
            if body is not None:
                raise Fault(f"{method} {template} takes no body.")
            return
        if body is None:
            if self.body_required[(method, template)]:
                raise Fault(f"{method} {template}: a body is required.")
            return
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        if errors:
            raise Fault("; ".join(
                f"{'.'.join(str(p) for p in e.absolute_path) or 'body'}: {e.message}" for e in errors
            ))

    def check_response(self, method: str, template: str, status: int, body) -> None:
        validator = self.responses.get((method, template, str(status)))
        if validator is not None:
            validator.validate(body)


class FakeFirecracker:
    def __init__(self, contract: Contract, instance_id: str, root: str, log_path: str):
        self.contract = contract
        self.id = instance_id
        self.root = root
        self.log_path = log_path
        self.state = "Not started"
        self.configured = False  # a boot-specific resource was configured
        self.boot_source: dict | None = None
        self.drives: dict[str, dict] = {}
        self.machine = {"vcpu_count": 1, "mem_size_mib": 128, "smt": False}
        self.interfaces: dict[str, dict] = {}
        self.exit_reason = ""

    # --- plumbing ------------------------------------------------------------
    def record(self, **entry) -> None:
        if self.log_path:
            line = json.dumps({"pid": os.getpid(), "id": self.id, **entry}) + "\n"
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(line)

    def host_path(self, path: str) -> str:
        """Where a path the VMM is given really is: inside the jail's root when jailed."""
        if not self.root:
            return path
        return os.path.join(self.root, path.lstrip("/"))

    def must_exist(self, path: str, what: str) -> None:
        if not os.path.isfile(self.host_path(path)):
            raise Fault(f"Unable to open the {what} {path}: No such file or directory (os error 2)")

    def handle(self, method: str, path: str, raw: bytes) -> tuple[int, dict | None]:
        template = ""
        body = None
        try:
            template = self.contract.template_of(method, path)
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError as exc:
                    raise Fault(f"Invalid JSON body: {exc}") from None
            self.contract.check_request(method, template, body)
            status, answer = self.dispatch(method, template, path, body)
            self.contract.check_response(method, template, status, answer)
        except Fault as fault:
            status, answer = 400, {"fault_message": str(fault)}
        self.record(method=method, path=path, template=template, body=body, status=status,
                    fault=(answer or {}).get("fault_message") if status >= 400 else None)
        return status, answer

    # --- the API -------------------------------------------------------------
    def dispatch(self, method: str, template: str, path: str, body) -> tuple[int, dict | None]:
        call = (method, template)
        if method == "GET":
            return 200, self.get(template)
        started = self.state != "Not started"
        if call in PRE_BOOT and started:
            raise Fault(AFTER_START)
        if call in POST_BOOT and not started:
            raise Fault(BEFORE_START)
        if call == ("PUT", "/snapshot/load"):
            return self.load_snapshot(body)
        if call not in NOT_CONFIGURING and call in PRE_BOOT:
            self.configured = True
        path_id = path.rsplit("/", 1)[-1]
        handlers = {
            ("PUT", "/boot-source"): lambda: self.put_boot_source(body),
            ("PUT", "/drives/{drive_id}"): lambda: self.put_drive(path_id, body),
            ("PUT", "/machine-config"): lambda: self.put_machine(body),
            ("PUT", "/network-interfaces/{iface_id}"): lambda: self.put_interface(path_id, body),
            ("PUT", "/actions"): lambda: self.action(body["action_type"]),
            ("PATCH", "/vm"): lambda: self.patch_vm(body["state"]),
            ("PUT", "/snapshot/create"): lambda: self.create_snapshot(body),
        }
        if call not in handlers:
            raise Fault(f"{method} {template} is valid but not modelled by the fake Firecracker.")
        handlers[call]()
        return 204, None

    def get(self, template: str) -> dict:
        if template == "/":
            return {"app_name": "Firecracker", "id": self.id, "state": self.state, "vmm_version": VERSION}
        if template == "/version":
            return {"firecracker_version": VERSION}
        if template == "/machine-config":
            return dict(self.machine)
        if template == "/vm/config":
            config = {"drives": list(self.drives.values()), "machine-config": dict(self.machine),
                      "network-interfaces": list(self.interfaces.values())}
            if self.boot_source:
                config["boot-source"] = self.boot_source
            return config
        raise Fault(f"GET {template} is valid but not modelled by the fake Firecracker.")

    def put_boot_source(self, body: dict) -> None:
        self.must_exist(body["kernel_image_path"], "kernel")
        if "initrd_path" in body:
            self.must_exist(body["initrd_path"], "initrd")
        self.boot_source = body

    def put_drive(self, path_id: str, body: dict) -> None:
        if body["drive_id"] != path_id:
            raise Fault(id_mismatch(path_id, body["drive_id"]))
        if "path_on_host" not in body:
            raise Fault("A virtio-block drive needs path_on_host.")
        self.must_exist(body["path_on_host"], "block device")
        if body["is_root_device"] and any(
            d["is_root_device"] and d["drive_id"] != path_id for d in self.drives.values()
        ):
            raise Fault("A root block device already exists!")
        self.drives[path_id] = body

    def put_machine(self, body: dict) -> None:
        if body.get("smt") and body["vcpu_count"] > 1 and body["vcpu_count"] % 2:
            raise Fault("The vCPU number is invalid! The vCPU number can only be 1 or an even number "
                        "when SMT is enabled.")
        if body["mem_size_mib"] < 1:
            raise Fault("The memory size (MiB) is invalid.")
        self.machine = {"smt": False, **body}

    def put_interface(self, path_id: str, body: dict) -> None:
        if body["iface_id"] != path_id:
            raise Fault(id_mismatch(path_id, body["iface_id"]))
        mac = body.get("guest_mac")
        if mac is not None and not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", mac):
            raise Fault(f"Invalid MAC address: {mac}")
        self.open_tap(body["host_dev_name"])
        self.interfaces[path_id] = body

    def open_tap(self, name: str) -> None:
        if len(name) > 15:
            raise Fault(f"{NO_TAP}: name {name} too long")
        taps_file = os.environ.get("FAKE_FC_TAPS", "")
        if taps_file:
            try:
                links = set(json.loads(Path(taps_file).read_text()))
            except (OSError, ValueError):
                links = set()
            if name not in links:
                raise Fault(f"{NO_TAP}: {name}: No such device")

    def action(self, action_type: str) -> None:
        if action_type == "InstanceStart":
            if self.state != "Not started":
                raise Fault(AFTER_START)
            if self.boot_source is None:
                raise Fault("Cannot start microvm without kernel configuration.")
            self.state = "Running"
            print(f"[    0.000000] Linux version 6.1 (fake guest of {self.id})", flush=True)
            print(f"[    0.100000] Kernel command line: {self.boot_source.get('boot_args', '')}", flush=True)
        elif action_type == "SendCtrlAltDel":
            if self.state == "Not started":
                raise Fault(BEFORE_START)
            print("[   10.000000] reboot: Restarting system", flush=True)
            if os.environ.get("FAKE_FC_GUEST") != "ignores-ctrl-alt-del":
                self.exit_reason = "the guest rebooted on Ctrl+Alt+Del (reboot=k)"
        else:  # FlushMetrics
            raise Fault("Metrics not configured: FlushMetrics needs PUT /metrics first.")

    def patch_vm(self, state: str) -> None:
        self.state = "Paused" if state == "Paused" else "Running"

    def create_snapshot(self, body: dict) -> None:
        if self.state != "Paused":
            raise Fault("Create snapshot error: the microVM must be paused before a snapshot is taken.")
        if body.get("snapshot_type", "Full") != "Full":
            raise Fault("Diff snapshots need dirty page tracking (track_dirty_pages), which is off.")
        for key in ("snapshot_path", "mem_file_path"):
            parent = os.path.dirname(self.host_path(body[key])) or "."
            if not os.path.isdir(parent):
                raise Fault(f"Cannot create {body[key]}: No such file or directory (os error 2)")
        state = {
            "fake_firecracker_snapshot": 1, "vmm_version": VERSION, "machine": self.machine,
            "drives": self.drives, "network_interfaces": self.interfaces,
        }
        Path(self.host_path(body["snapshot_path"])).write_text(json.dumps(state))
        with open(self.host_path(body["mem_file_path"]), "wb") as mem:
            mem.write(MEMORY_MAGIC)
            mem.truncate(self.machine["mem_size_mib"] * MIB)  # sparse: no blocks written

    def load_snapshot(self, body: dict) -> tuple[int, None]:
        if self.configured or self.state != "Not started":
            raise Fault(LOAD_NOT_FIRST)
        self.configured = True
        try:
            self._load(body)
        except Fault:
            self.exit_reason = "a failed snapshot load ends the process"
            raise
        return 204, None

    def _load(self, body: dict) -> None:
        if ("mem_file_path" in body) == ("mem_backend" in body):
            raise Fault("Exactly one of mem_file_path and mem_backend must be given.")
        backend = body.get("mem_backend") or {"backend_type": "File", "backend_path": body["mem_file_path"]}
        if backend["backend_type"] != "File":
            raise Fault("Uffd memory backends are not modelled by the fake Firecracker.")
        self.must_exist(body["snapshot_path"], "snapshot state file")
        self.must_exist(backend["backend_path"], "memory file")
        try:
            state = json.loads(Path(self.host_path(body["snapshot_path"])).read_text())
            assert state["fake_firecracker_snapshot"] == 1
        except (ValueError, KeyError, AssertionError):
            raise Fault("Load snapshot error: the microVM state file is corrupt (CRC mismatch).") from None
        mem = Path(self.host_path(backend["backend_path"]))
        with open(mem, "rb") as f:
            magic = f.read(len(MEMORY_MAGIC))
        if magic != MEMORY_MAGIC or mem.stat().st_size != state["machine"]["mem_size_mib"] * MIB:
            raise Fault("Load snapshot error: the memory file does not match the snapshot's memory.")
        for drive in state["drives"].values():  # the disks must be where they were
            self.must_exist(drive["path_on_host"], "block device")
        interfaces = state["network_interfaces"]
        for override in body.get("network_overrides", []):
            if override["iface_id"] not in interfaces:
                raise Fault(f"Invalid network override: no interface {override['iface_id']}")
            interfaces[override["iface_id"]]["host_dev_name"] = override["host_dev_name"]
        for interface in interfaces.values():
            self.open_tap(interface["host_dev_name"])
        self.machine, self.drives, self.interfaces = state["machine"], state["drives"], interfaces
        self.state = "Running" if body.get("resume_vm") else "Paused"
        print(f"[   42.000000] resumed from a snapshot ({self.id})", flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, answer = self.server.fake.handle(self.command, self.path, raw)
        data = json.dumps(answer).encode() if answer is not None else b""
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:  # writing b"" to a client gone after a 204's headers breaks the pipe
            self.wfile.write(data)
        if self.server.fake.exit_reason:
            self.close_connection = True

    do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args) -> None:  # a unix socket has no client address
        pass


class Server(socketserver.UnixStreamServer):
    fake: FakeFirecracker


def parse_args(argv: list[str]) -> dict[str, str]:
    known = {"--api-sock", "--id", "--start-time-us", "--start-time-cpu-us", "--parent-cpu-time-us"}
    args: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--version":
            args["version"] = "1"
            i += 1
            continue
        name, eq, value = arg.partition("=")
        if name not in known:
            sys.exit(f"error: Found argument '{arg}' which wasn't expected.")
        if not eq:
            i += 1
            if i >= len(argv):
                sys.exit(f"error: {name} needs a value")
            value = argv[i]
        args[name] = value
        i += 1
    return args


def main() -> None:
    args = parse_args(sys.argv[1:])
    if "version" in args:
        print(f"Firecracker v{VERSION} (fake, tests/engines/firecracker)\n")
        return
    root = os.environ.get("FAKE_FC_ROOT", "")
    instance_id = args.get("--id", "anonymous-instance")
    socket_path = args.get("--api-sock", "/run/firecracker.socket")
    host_socket = os.path.join(root, socket_path.lstrip("/")) if root else socket_path
    fake = FakeFirecracker(Contract(os.environ["FAKE_FC_SPEC"]), instance_id, root,
                           os.environ.get("FAKE_FC_LOG", ""))
    fake.record(event="started", argv=sys.argv[1:], root=root, cwd=os.getcwd())
    if os.path.exists(host_socket):
        fake.record(event="exited", reason="socket in use")
        sys.exit(f"Failed to open the API socket at: {socket_path}. Check that it is not already used.")
    print(f"Running Firecracker v{VERSION} (fake) as {instance_id}", flush=True)
    server = Server(host_socket, Handler)
    server.fake = fake
    started = time.monotonic()
    with server:
        while not fake.exit_reason:
            server.handle_request()
    fake.record(event="exited", reason=fake.exit_reason, seconds=round(time.monotonic() - started, 3))


if __name__ == "__main__":
    main()
