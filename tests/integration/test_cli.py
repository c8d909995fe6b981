"""`tt` on a real node: `tt env up -f --wait` of a busybox Env returns once its forwarded
port answers, and the HTTP line it prints reaches the VM; `tt env down --wait` removes it.
`tt ssh` into a Debian VM, with the key `tt keys add` gave, runs `hostname`.

The CLI runs in this process (Typer's CliRunner) against the live server; the tasks run
inline in the server's thread (tests/conftest.py), on the real QEMU node. Forwarded ports
answer on the node's public address from the node itself too (test_qemu_node.py), so the
port check and the HTTP request go there."""

from __future__ import annotations

import json
import subprocess
import urllib.request

from engines.libvirt import debian_builder
from tests.integration.test_debian import user_key, wait_for
from tests.ttcli.conftest import envfile_package, tt, tt_config  # noqa: F401  (the CLI's fixtures)
from vms.template_install import DEBIAN_TEMPLATE, install_debian_template

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


def test_ssh_runs_hostname_in_a_debian_vm(qnode, alice, live_server, tt, tmp_path, envfile_package):  # noqa: F811
    debian_builder.build()  # cached after its first build
    install_debian_template(qnode)
    key, _ = user_key(tmp_path, "laptop")
    login = tt("login", live_server.url, "--user", "alice", "--password-stdin", input="pw-alice\n")
    assert login.exit_code == 0, login.stderr
    added = tt("keys", "add", f"{key}.pub")
    assert added.exit_code == 0, added.stderr
    env_file = tmp_path / "tt.yaml"
    env_file.write_text(f"name: deb\nvms:\n  - name: web\n    template: {DEBIAN_TEMPLATE}\n"
                        "    mem_mb: 512\n    ports: [22]\n")
    up = tt("env", "up", "-f", str(env_file), "--wait", "--timeout", "300")
    assert up.exit_code == 0, up.stderr
    assert "web  ssh -p " in up.stdout

    # The command `tt ssh deb/web -- hostname` runs, with this test's key and no user config.
    argv = json.loads(tt("ssh", "deb/web", "--json", "--", "hostname").stdout)["argv"]
    own = ["-F", "/dev/null", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
    argv = [argv[0], *own, *argv[1:]]

    def hostname() -> str:  # cloud-init may give the key a little after sshd answers
        run = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        return run.stdout if run.returncode == 0 else ""

    assert wait_for(hostname, "ssh answer", deadline_s=300) == "web\n"
    assert tt("env", "down", "deb", "--wait").exit_code == 0
