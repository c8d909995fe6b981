"""A client machine in its own network namespace, and a way to talk to guests.

The client (198.18.0.2 and .3, in 198.18.0.0/15, the benchmarking range the tests
keep for test clients) reaches the node at 198.18.0.1 through a veth pair, exactly
as a user's machine would reach the node's public address. No traffic leaves
this host.

`ClientNet` names such a namespace; the module-level names and functions are
the integration tests' one (`CLIENT`). The benchmarks (bench/_common.py) make
their own `ClientNet` with other names and addresses, so both can run at once.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class ClientNet:
    """A client namespace `netns` joined to the host by the veth pair `host_if`
    (host side, which holds `node_addr`) / `ns_if` (inside, which holds
    `client_addrs`), all in one /`prefix` subnet; the client's default route is
    the node's address."""

    netns: str = "tt-client"
    host_if: str = "tt-cl-host"
    ns_if: str = "tt-cl-ns"
    node_addr: str = "198.18.0.1"
    client_addrs: tuple[str, ...] = ("198.18.0.2", "198.18.0.3")
    prefix: int = 29

    @property
    def network(self) -> str:
        """The namespace's subnet, with the node's end of the pair."""
        return str(ipaddress.ip_interface(f"{self.node_addr}/{self.prefix}").network)

    def create(self) -> None:
        """Make the namespace afresh (whatever an earlier run left is removed first)."""
        self.destroy()
        sh("ip", "netns", "add", self.netns)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        sh("ip", "link", "set", self.ns_if, "netns", self.netns)
        sh("ip", "addr", "add", f"{self.node_addr}/{self.prefix}", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        inside = ("ip", "netns", "exec", self.netns)
        for addr in self.client_addrs:
            sh(*inside, "ip", "addr", "add", f"{addr}/{self.prefix}", "dev", self.ns_if)
        sh(*inside, "ip", "link", "set", self.ns_if, "up")
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh(*inside, "ip", "route", "add", "default", "via", self.node_addr)

    def destroy(self) -> None:
        """Remove the namespace and the veth pair; nothing to remove is fine."""
        sh("ip", "netns", "del", self.netns, check=False)
        sh("ip", "link", "del", self.host_if, check=False)


CLIENT = ClientNet()
NETNS = CLIENT.netns
HOST_IF, NS_IF = CLIENT.host_if, CLIENT.ns_if
NODE_ADDR = CLIENT.node_addr
CLIENT_ADDRS = CLIENT.client_addrs


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def create_client(net: ClientNet = CLIENT) -> None:
    net.create()


def destroy_client(net: ClientNet = CLIENT) -> None:
    net.destroy()


_FETCH = """
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode(), end="")
except Exception as exc:
    print(f"ERROR {exc}", end=""); sys.exit(1)
"""


def client_get(url: str, timeout: float = 3, netns: str = NETNS) -> str | None:
    """GET from inside the client namespace; None when it cannot connect."""
    out = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", _FETCH, url, str(timeout)],
        capture_output=True, text=True,
    )
    return out.stdout if out.returncode == 0 else None


def wait_for_http(url: str, deadline_s: float = 120, expect: str = "") -> str:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        body = client_get(url, timeout=2)
        if body is not None and expect in body:
            return body
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer{' with ' + expect if expect else ''} in {deadline_s} s")


class ClientServer:
    """An HTTP server in the client namespace (what a guest's egress tries to reach), or in
    another namespace `net`."""

    def __init__(self, port: int = 8080, net: ClientNet = CLIENT):
        self.port = port
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", net.netns, sys.executable, "-m", "http.server", str(port),
             "--bind", "0.0.0.0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(50):
            if client_get(f"http://127.0.0.1:{port}/", timeout=1, netns=net.netns) is not None:
                return
            time.sleep(0.1)
        raise AssertionError("the client's HTTP server did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _strip_telnet(data: bytes) -> bytes:
    out, i = bytearray(), 0
    while i < len(data):
        if data[i] == 255 and i + 1 < len(data):  # IAC
            i += 3 if data[i + 1] in (251, 252, 253, 254) else 2
            continue
        out.append(data[i])
        i += 1
    return bytes(out)


def guest_run(host: str, port: int, command: str, timeout: float = 30) -> str:
    """Run a shell command in the guest through its telnet shell; return what it printed.

    The output is framed by two markers printed with their quotes split, so the
    shell's echo of the command line (which the terminal may also wrap) never
    matches them.
    """
    tag = uuid.uuid4().hex[:8]
    begin, end = f"__BEG_{tag}__", f"__END_{tag}__"
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"echo __BEG_''{tag}__; {command}; echo __END_''{tag}__\n".encode())
        data = b""
        deadline = time.monotonic() + timeout
        while end.encode() not in _strip_telnet(data).replace(b"\r\n", b"\n"):
            if time.monotonic() > deadline:
                raise AssertionError(f"guest command {command!r} did not finish: {data[-300:]!r}")
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    text = _strip_telnet(data).decode(errors="replace").replace("\r", "")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # terminal control sequences
    body = text.rsplit(end, 1)[0]
    return body.rsplit(begin, 1)[-1].strip()


def wait_for_shell(host: str, port: int, deadline_s: float = 120) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if "ok" in guest_run(host, port, "echo o''k", timeout=5):
                return
        except (OSError, AssertionError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"no guest shell at {host}:{port} in {deadline_s} s")


def client_send_udp(host: str, port: int, payload: bytes) -> None:
    code = (
        "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))"
    )
    subprocess.run(
        ["ip", "netns", "exec", NETNS, sys.executable, "-c", code, host, str(port), payload.decode()],
        check=True,
    )


def client_ssh(host: str, port: int, key: str, command: str, *, user: str = "tt",
               timeout: float = 30) -> subprocess.CompletedProcess:
    """`command` run over SSH from the client namespace as `user`, with the private key
    file `key` and nothing else (no agent, no password, no host key kept)."""
    return subprocess.run(
        ["ip", "netns", "exec", NETNS, "ssh", "-F", "/dev/null", "-i", key, "-p", str(port),
         "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
         f"{user}@{host}", command],
        capture_output=True, text=True, timeout=timeout,
    )


def wait_for_ssh(host: str, port: int, key: str, deadline_s: float = 300) -> str:
    """Poll until `true` runs over SSH with `key`; the time it took, and the last refusal if none."""
    start = time.monotonic()
    last = ""
    while time.monotonic() - start < deadline_s:
        try:
            result = client_ssh(host, port, key, "true", timeout=15)
        except subprocess.TimeoutExpired:
            last = "timed out"
            continue
        if result.returncode == 0:
            return f"{time.monotonic() - start:.1f}"
        last = result.stderr.strip()
        time.sleep(1)
    raise AssertionError(f"ssh -p {port} tt@{host} did not succeed in {deadline_s} s: {last}")
