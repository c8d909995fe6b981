"""How to reach a VM: its forwarded ports as lines to copy (`ssh -p 31022 tt@host`,
`http://host:31080/`), and the host and port `tt ssh` dials.

The guests' user is `tt` (cloud-init templates give it your SSH keys)."""

from __future__ import annotations

from dataclasses import dataclass

GUEST_USER = "tt"
HTTP_PORTS = {80, 8000, 8080, 8888, 3000, 5000}
HTTPS_PORTS = {443, 8443}


@dataclass(frozen=True)
class Connection:
    vm: str
    protocol: str
    inner_port: int
    host: str
    port: int
    line: str

    def as_dict(self) -> dict:
        return {"vm": self.vm, "protocol": self.protocol, "inner_port": self.inner_port,
                "host": self.host, "port": self.port, "line": self.line}


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


def line_for(inner_port: int, protocol: str, host: str, port: int) -> str:
    if protocol == "tcp" and inner_port == 22:
        return f"ssh -p {port} {GUEST_USER}@{host}" if port != 22 else f"ssh {GUEST_USER}@{host}"
    if protocol == "tcp" and inner_port in HTTP_PORTS:
        return f"http://{host}:{port}/"
    if protocol == "tcp" and inner_port in HTTPS_PORTS:
        return f"https://{host}:{port}/"
    return f"{host}:{port} ({inner_port}/{protocol})"


def connections(vm: dict) -> list[Connection]:
    """Every way in to `vm` (a VM as GET /api/vms/{id}/ answers): its forwarded ports; a
    flat VM is dialled at its own address."""
    found = []
    for port in vm.get("ports", []):
        host, public = split_endpoint(port["endpoint"])
        found.append(Connection(vm["name"], port["protocol"], port["inner_port"], host, public,
                                line_for(port["inner_port"], port["protocol"], host, public)))
    if not found and vm.get("net_kind") == "flat" and vm.get("ip"):
        found.append(Connection(vm["name"], "tcp", 22, vm["ip"], 22, line_for(22, "tcp", vm["ip"], 22)))
    return found


def ssh_target(vm: dict) -> tuple[str, int]:
    """(host, port) of the VM's SSH server: its forwarded port 22, or port 22 of a flat VM."""
    for conn in connections(vm):
        if conn.protocol == "tcp" and conn.inner_port == 22:
            return conn.host, conn.port
    from ttcli.errors import Failure

    shown = ", ".join(f"{p['inner_port']}/{p['protocol']}" for p in vm.get("ports", [])) or "none"
    raise Failure(f"VM {vm['name']} forwards no port 22 (its ports: {shown}); add 22 to its ports",
                  field="ports")
