"""The whole `tt` scenario against a live server on libvirt's test driver: login, `env up -f`
of two VMs with --wait, `env ls --json`, snapshots, extend, stop/start, ssh's command line,
exec refused, bad files, usage errors, a timeout, `env down --wait`, each with its exit code.

The server is pytest-django's live_server, and a real task cluster in its own process runs
the operations it enqueues (the `cluster_template` fixture), so `--wait` follows operations
that end after their request has answered, as on a site. The test driver boots nothing, so
no forwarded port accepts a connection:
`env up --wait` runs with --no-port-check, and one run without it must time out (exit 3),
naming the port that did not answer.
"""

from __future__ import annotations

import json
import re
import stat
import time

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

ENV_FILE = """\
# Two VMs: web forwards SSH and HTTP, db nothing.
name: demo
vms:
  - name: web
    template: tt/busybox
    mem_mb: 64
    ports: [22, 80]
  - name: db
    template: tt/busybox
    mem_mb: 64
"""

BAD_FILE = """\
name: broken
vms:
  - name: web
    template: tt/busybox
    mem_mb: 64
  - name: db
    template: tt/busybox
    mem_mb: 0
"""


def ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def test_a_whole_scenario(live_server, alice, cluster_template, tt, tt_config, tmp_path, envfile_package,
                           monkeypatch):
    env_file = tmp_path / "tt.yaml"
    env_file.write_text(ENV_FILE)

    # Not logged in yet: refused, saying what to do.
    result = tt("env", "ls")
    assert result.exit_code == 1 and "tt login" in result.stderr

    # Login with user and password: the token is kept, readable by the user alone.
    result = ok(tt("login", live_server.url, "--user", "alice", "--password-stdin", input="pw-alice\n"))
    assert "as alice" in result.stdout
    config_file = tt_config / "config.json"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert json.loads(config_file.read_text())["token"]
    # A wrong password: the API's refusal, exit 1, and the kept token untouched.
    result = tt("login", live_server.url, "--user", "alice", "--password-stdin", input="nope\n")
    assert result.exit_code == 1 and result.stderr.startswith("tt: ")

    # A file with a bad field: refused offline, with its line, nothing created.
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_FILE)
    result = tt("env", "validate", "-f", str(bad))
    assert result.exit_code == 1
    refusal = rf"{re.escape(str(bad))}:8: vms\[1\]\.mem_mb: must be an integer between 1 and"
    assert re.search(refusal, result.stderr), result.stderr
    result = tt("env", "up", "-f", str(bad), "--json")
    assert result.exit_code == 1
    error = json.loads(result.stderr)["error"]
    assert ":8: vms[1].mem_mb" in error["message"]
    ok(tt("env", "validate", "-f", str(env_file)))

    # Up, waiting: two VMs running, then how to connect.
    result = ok(tt("env", "up", "-f", str(env_file), "--wait", "--no-port-check"))
    assert "Env demo is ready: 2 VMs running" in result.stdout
    ssh_line = re.search(r"^web\s+ssh -p (\d+) tt@203\.0\.113\.10$", result.stdout, re.M)
    http_line = re.search(r"^web\s+http://203\.0\.113\.10:(\d+)/$", result.stdout, re.M)
    assert ssh_line and http_line, result.stdout
    # Again: it exists, nothing is made.
    result = ok(tt("env", "up", "-f", str(env_file), "--json"))
    assert json.loads(result.stdout)["created"] is False

    # With the port check, ports that never answer (as the test driver's guests, which run
    # nothing; this machine's network may accept any connection, so the check is told so):
    # exit 3, naming them.
    with monkeypatch.context() as patch:
        patch.setattr("ttcli.readiness.PortProbe.step", lambda self, wait: time.sleep(wait) or set())
        result = tt("env", "up", "-f", str(env_file), "--wait", "--timeout", "1")
    assert result.exit_code == 3, result.stderr
    assert "no answer from web port 22" in result.stderr

    # ls --json for scripts.
    envs = json.loads(ok(tt("env", "ls", "--json")).stdout)
    assert [(e["name"], e["status"], sorted(v["name"] for v in e["vms"])) for e in envs] == [
        ("demo", "active", ["db", "web"])]
    vms = json.loads(ok(tt("vm", "ls", "demo", "--json")).stdout)
    assert {v["name"]: v["status"] for v in vms} == {"db": "running", "web": "running"}
    web = next(v for v in vms if v["name"] == "web")
    assert {(p["inner_port"], p["public_port"]) for p in web["ports"]} >= {(22, int(ssh_line[1]))}

    # ssh's command line: the forwarded port, user tt, a known_hosts entry per VM.
    argv = json.loads(ok(tt("ssh", "demo/web", "--json", "--", "hostname")).stdout)["argv"]
    assert argv[:3] == ["ssh", "-p", ssh_line[1]] and argv[-3:] == ["tt@203.0.113.10", "--", "hostname"]
    result = tt("ssh", "demo/db")
    assert result.exit_code == 1 and "forwards no port 22" in result.stderr

    # Snapshots: create, list, apply.
    ok(tt("snapshot", "create", "demo/web", "s1", "--wait"))
    snaps = json.loads(ok(tt("snapshot", "ls", "demo", "--json")).stdout)
    assert [(s["vm_name"], s["name"], s["status"]) for s in snaps] == [("web", "s1", "ready")]
    result = ok(tt("snapshot", "apply", "demo/web", "s1", "--wait", "--json"))
    assert json.loads(result.stdout)["operation"]["status"] == "succeeded"
    result = tt("snapshot", "apply", "demo/web", "nope")
    assert result.exit_code == 1 and "snapshot: VM demo/web has no snapshot nope" in result.stderr

    # Extend: two hours from now.
    result = json.loads(ok(tt("env", "extend", "demo", "2h", "--json")).stdout)
    assert 7000 < result["env"]["seconds_left"] <= 7200
    # Stop and start: the second stop has nothing to do.
    ok(tt("env", "stop", "demo", "--wait"))
    assert "nothing to stop" in ok(tt("env", "stop", "demo")).stdout
    ok(tt("env", "start", "demo", "--wait"))

    # exec on a template without the exec feature (or a server without exec): refused, clearly.
    result = tt("exec", "demo/web", "--", "hostname")
    assert result.exit_code == 1 and "exec" in result.stderr, result.stderr

    # Operations.
    ops = json.loads(ok(tt("ops", "ls", "demo", "--json")).stdout)
    assert {"env_create", "snapshot_create", "snapshot_apply", "env_extend"} <= {o["kind"] for o in ops}
    ok(tt("ops", "watch", str(ops[0]["id"])))

    # Refusals name the field; usage errors exit 2.
    result = tt("env", "show", "nosuch")
    assert result.exit_code == 1 and result.stderr == "tt: env: no live Env named nosuch\n"
    assert tt("env", "extend", "demo", "2x").exit_code == 2
    assert tt("exec", "demo/web").exit_code == 2
    assert tt("exec", "web", "--", "true").exit_code == 2
    assert tt("no-such-command").exit_code == 2

    # Down, waiting; then no live Env.
    ok(tt("env", "down", "demo", "--wait"))
    assert json.loads(ok(tt("env", "ls", "--json")).stdout) == []
    ok(tt("logout"))
    assert not config_file.exists()


def shape(vms: list[dict]) -> list[tuple]:
    """What an Env file describes of each VM, as the API shows it."""
    return sorted((vm["name"], vm["template"], vm["cpu_num"], vm["mem_mb"], vm["net_kind"],
                   sorted((p["inner_port"], p["protocol"]) for p in vm["ports"])) for vm in vms)


def test_an_exported_env_made_again_has_the_same_shape(live_server, alice, template, tt, tmp_path,
                                                        envfile_package):
    """Needs the server's GET /api/envs/{id}/envfile/ (the envfile part of issue 26)."""
    env_file = tmp_path / "tt.yaml"
    env_file.write_text(ENV_FILE)
    ok(tt("login", live_server.url, "--user", "alice", "--password-stdin", input="pw-alice\n"))
    ok(tt("env", "up", "-f", str(env_file), "--wait", "--no-port-check"))

    exported = ok(tt("env", "export", "demo")).stdout
    again = tmp_path / "exported.yaml"
    again.write_text(exported)
    ok(tt("env", "validate", "-f", str(again)))
    ok(tt("env", "up", "-f", str(again), "--name", "copy", "--wait", "--no-port-check"))

    original = json.loads(ok(tt("vm", "ls", "demo", "--json")).stdout)
    copy = json.loads(ok(tt("vm", "ls", "copy", "--json")).stdout)
    assert shape(copy) == shape(original)
