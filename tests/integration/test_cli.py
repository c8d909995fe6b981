"""`tt` on a real node: `tt env up -f --wait` of a busybox Env returns once its forwarded
port answers, and the HTTP line it prints reaches the VM; `tt env down --wait` removes it.

The CLI runs in this process (Typer's CliRunner) against the live server; the tasks run
inline in the server's thread (tests/conftest.py), on the real QEMU node. Forwarded ports
answer on the node's public address from the node itself too (test_qemu_node.py), so the
port check and the HTTP request go there."""

from __future__ import annotations

import json
import urllib.request

from tests.ttcli.conftest import envfile_package, tt, tt_config  # noqa: F401  (the CLI's fixtures)

ENV_FILE = """\
name: cli-itest
vms:
  - name: web
    template: tt/busybox
    mem_mb: 128
    ports: [80]
"""


def test_env_up_waits_for_the_port_and_its_line_reaches_the_vm(qnode, alice, live_server, tt, tmp_path,  # noqa: F811
                                                                envfile_package):  # noqa: F811
    env_file = tmp_path / "tt.yaml"
    env_file.write_text(ENV_FILE)
    login = tt("login", live_server.url, "--user", "alice", "--password-stdin", input="pw-alice\n")
    assert login.exit_code == 0, login.stderr

    up = tt("env", "up", "-f", str(env_file), "--wait", "--timeout", "240", "--json")
    assert up.exit_code == 0, up.stderr
    result = json.loads(up.stdout)
    [web] = result["vms"]
    assert web["status"] == "running"
    [line] = [c["line"] for c in result["connections"] if c["inner_port"] == 80]
    assert line.startswith(f"http://{qnode.public_host}:")
    page = urllib.request.urlopen(line, timeout=10).read().decode()
    assert web["ip"] in page

    down = tt("env", "down", "cli-itest", "--wait", "--json")
    assert down.exit_code == 0, down.stderr
    assert json.loads(tt("env", "ls", "--json").stdout) == []
