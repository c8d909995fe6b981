"""A command run in a local podman's container by `runc exec` directly: the process spec it
is given (what podman's exec would give), the user lookup, which containers it applies to,
the engine's choice of path, and the run itself against a stand-in for runc (the real one,
and the comparison with podman's exec: tests/integration/test_docker_guest.py)."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import textwrap
import time

import pytest

from engines.docker import guest_exec, runc_exec
from engines.docker.engine import DockerEngine
from engines.docker.guest_exec import ContainerNotRunning
from engines.docker.runc_exec import (
    ExecUser,
    NotApplicable,
    RuncTarget,
    creation_env,
    exec_process,
    exec_user,
    run_runc_exec,
    runc_target,
)
from engines.errors import EngineError
from engines.guest_io import ExecRequest, ExecResult
from engines.node_options import NodeOptions

PASSWD = (b"root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000::/home/tester:/bin/sh\n"
          b"nobody:x:65534:65534::/:/x\n")
GROUP = b"root:x:0:\nstaff:x:50:tester\nusers:x:100:root,tester\ntesters:x:1000:\n"
CAPS = ["CAP_CHOWN", "CAP_KILL", "CAP_SETUID"]
SPEC_PROCESS = {
    "user": {"uid": 0, "gid": 0, "umask": 18},
    "args": ["sleep", "1000"],
    "env": ["PATH=/bin", "TERM=xterm", "container=podman"],
    "cwd": "/",
    "capabilities": {name: list(CAPS) for name in ("bounding", "effective", "permitted")},
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
    "noNewPrivileges": True,
    "apparmorProfile": "containers-default-0.50.1",
    "oomScoreAdj": 5,
    "terminal": True,
    "consoleSize": {"height": 24, "width": 80},
}


def files(path: str) -> bytes | None:
    return {"/etc/passwd": PASSWD, "/etc/group": GROUP}.get(path)


def target(**changes) -> RuncTarget:
    fields = dict(container_id="c" * 64, runtime="/usr/bin/runc", root="/run/runc", init_pid=1,
                  process=json.loads(json.dumps(SPEC_PROCESS)),
                  process_label="system_u:system_r:container_t:s0")
    fields.update(changes)
    return RuncTarget(**fields)


# --- the user, as runc's user.GetExecUser finds it ------------------------------------------


@pytest.mark.parametrize(("spec", "expected"), [
    ("", ExecUser(0, 0, "/root", (100,))),
    ("tester", ExecUser(1000, 1000, "/home/tester", (50, 100))),
    ("1000", ExecUser(1000, 1000, "/home/tester", (50, 100))),
    ("4242", ExecUser(4242, 0, "", ())),  # a uid passwd does not know: group 0, no home
    ("tester:staff", ExecUser(1000, 50, "/home/tester", ())),  # an explicit group: no others
    ("tester:77", ExecUser(1000, 77, "/home/tester", ())),
    ("4242:staff", ExecUser(4242, 50, "", ())),
])
def test_the_user_is_looked_up_as_podman_does(spec, expected):
    assert exec_user(spec, PASSWD, GROUP) == expected


@pytest.mark.parametrize("spec", ["nosuchuser", "tester:nosuchgroup", "4294967296", "0:2147483648"])
def test_a_name_the_container_does_not_know_is_bad_input_naming_the_field(spec):
    with pytest.raises(EngineError) as raised:
        exec_user(spec, PASSWD, GROUP)
    assert raised.value.field == "user"


def test_an_image_without_passwd_still_takes_numbers():
    assert exec_user("1000:1000", None, None) == ExecUser(1000, 1000, "", ())
    with pytest.raises(EngineError):
        exec_user("tester", None, None)


# --- the process spec -----------------------------------------------------------------------


def test_root_gets_the_containers_bounding_set_and_the_rest_of_its_process_unchanged():
    spec = target()
    process = exec_process(spec, ExecRequest(argv=("id", "-u"), env=(("A", "1"),), cwd="/tmp"), files)
    assert process["args"] == ["id", "-u"] and process["cwd"] == "/tmp" and process["terminal"] is False
    assert "consoleSize" not in process
    assert process["env"] == ["PATH=/bin", "TERM=xterm", "container=podman", "A=1", "HOME=/root"]
    caps = process["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == CAPS and caps["inheritable"] == []
    assert process["user"] == {"uid": 0, "gid": 0, "umask": 18}
    # what the container's process had, the exec has: no_new_privs, rlimits, AppArmor, OOM score
    for kept in ("rlimits", "noNewPrivileges", "apparmorProfile", "oomScoreAdj"):
        assert process[kept] == SPEC_PROCESS[kept]
    assert process["selinuxLabel"] == "system_u:system_r:container_t:s0"
    assert spec.process == SPEC_PROCESS  # the container's own spec is left as it was


def test_another_user_gets_its_ids_groups_and_home_and_no_more_capabilities_than_podman_gives():
    process = exec_process(target(), ExecRequest(argv=("id",), user="tester"), files)
    assert process["user"] == {"uid": 1000, "gid": 1000, "umask": 18, "additionalGids": [50, 100]}
    assert process["env"][-1] == "HOME=/home/tester"
    caps = process["capabilities"]
    assert caps["bounding"] == CAPS and caps["inheritable"] == []
    # podman leaves a non-root exec the spec's effective and permitted sets (runc applies
    # them after setuid), never more than the bounding set
    assert set(caps["effective"]) <= set(CAPS) and set(caps["permitted"]) <= set(CAPS)


def test_the_containers_own_user_keeps_its_effective_set_as_ambient_too():
    process = exec_process(target(config_user="tester"), ExecRequest(argv=("id",)), files)
    assert process["user"]["uid"] == 1000
    caps = process["capabilities"]
    assert caps["effective"] == caps["permitted"] == caps["inheritable"] == caps["ambient"] == CAPS


def test_a_home_in_the_image_env_or_the_request_is_kept():
    spec = target()
    spec.process["env"].append("HOME=/data")
    assert exec_process(spec, ExecRequest(argv=("x",), user="tester"), files)["env"][-1] == "HOME=/data"
    process = exec_process(target(), ExecRequest(argv=("x",), env=(("HOME", "/mine"),)), files)
    assert [e for e in process["env"] if e.startswith("HOME=")] == ["HOME=/mine"]


def test_the_env_podman_appended_at_the_start_is_not_the_execs():
    env = ["PATH=/bin", "HOME=/root", "HOSTNAME=web1"]
    assert creation_env(env, "web1") == ["PATH=/bin"]
    assert creation_env(["PATH=/bin", "HOSTNAME=other"], "web1") == ["PATH=/bin", "HOSTNAME=other"]


# --- which containers -----------------------------------------------------------------------


def inspect(tmp_path, **changes) -> dict:
    config = tmp_path / "config.json"
    env = ["PATH=/bin", "HOME=/root", "HOSTNAME=h"]  # HOME and HOSTNAME as podman appends them
    config.write_text(json.dumps({"process": {**SPEC_PROCESS, "env": env}}))
    (tmp_path / "state" / "c1").mkdir(parents=True, exist_ok=True)
    (tmp_path / "state" / "c1" / "state.json").write_text("{}")
    found = {"Id": "c1", "Name": "vm-1", "OCIRuntime": "runc", "OCIConfigPath": str(config),
             "State": {"Running": True, "Paused": False, "Pid": 4242},
             "Config": {"Hostname": "h", "User": ""},
             "ProcessLabel": "", "HostConfig": {}}
    found.update(changes)
    return found


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(runc_exec.os, "geteuid", lambda: 0)


def test_a_running_runc_container_with_its_state_is_a_target(tmp_path, as_root):
    found = runc_target(inspect(tmp_path), "/usr/bin/runc", root=str(tmp_path / "state"))
    assert (found.container_id, found.init_pid, found.runtime) == ("c1", 4242, "/usr/bin/runc")
    assert found.process["env"] == ["PATH=/bin"]


@pytest.mark.parametrize(("changes", "why"), [
    ({"OCIRuntime": "crun"}, "not runc"),
    ({"Id": "c2"}, "no state"),
    ({"OCIConfigPath": "/nonexistent/config.json"}, "cannot be read"),
    ({"HostConfig": {"GroupAdd": ["audio"]}}, "added groups"),
])
def test_where_runc_cannot_apply_it_says_why(tmp_path, as_root, changes, why):
    with pytest.raises(NotApplicable, match=why):
        runc_target(inspect(tmp_path, **changes), "/usr/bin/runc", root=str(tmp_path / "state"))


def test_not_as_root_it_does_not_apply(tmp_path, monkeypatch):
    monkeypatch.setattr(runc_exec.os, "geteuid", lambda: 1000)
    with pytest.raises(NotApplicable, match="not root"):
        runc_target(inspect(tmp_path), "/usr/bin/runc", root=str(tmp_path / "state"))


@pytest.mark.parametrize("state", [{"Running": False}, {"Running": True, "Paused": True}])
def test_a_stopped_container_is_the_same_error_as_through_the_api(tmp_path, as_root, state):
    with pytest.raises(ContainerNotRunning):
        runc_target(inspect(tmp_path, State=state), "/usr/bin/runc", root=str(tmp_path / "state"))


# --- the run, against a stand-in for runc ----------------------------------------------------

# Plays `runc [--root R --log L --log-format json] exec --detach --process P --pid-file F ID`
# under the waiter: starts the process's args on this host as a session leader with our
# pipes, writes its PID and exits at once, leaving it to the waiter. A command named
# "nosuchcmd" fails as runc does.
FAKE_RUNC = textwrap.dedent("""\
    import json, os, sys
    args = sys.argv[1:]
    assert "--detach" in args
    log, spec, pid_file = (args[args.index(flag) + 1] for flag in ("--log", "--process", "--pid-file"))
    process = json.load(open(spec))
    if process["args"][0] == "nosuchcmd":
        with open(log, "a") as f:
            f.write(json.dumps({"level": "error", "msg": 'exec failed: exec: "nosuchcmd": executable file '
                                                        'not found in $PATH'}) + "\\n")
        sys.stderr.write("exec failed: nosuchcmd not found\\n")
        sys.exit(1)
    # posix_spawn, not Popen: Popen would reap a command that ended first, as runc does not
    pid = os.posix_spawnp(process["args"][0], process["args"], dict(e.split("=", 1) for e in process["env"]),
                          setsid=True)
    open(pid_file, "w").write(str(pid))
""")


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "runc"
    script.write_text(f"#!{sys.executable}\n" + FAKE_RUNC)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    process = {**SPEC_PROCESS, "env": ["PATH=/usr/bin:/bin"]}
    return target(runtime=str(script), init_pid=os.getpid(), process=process)


def test_streams_stdin_and_the_exit_code_come_through(fake):
    request = ExecRequest(argv=("sh", "-c", "cat; echo err >&2; exit 3"), stdin=b"in\n")
    result = run_runc_exec(fake, request, files)
    assert (result.exit_code, result.stdout, result.stderr, result.timed_out) == (3, b"in\n", b"err\n", False)
    assert run_runc_exec(fake, ExecRequest(argv=("true",)), files).exit_code == 0
    assert run_runc_exec(fake, ExecRequest(argv=("sh", "-c", "kill -9 $$")), files).exit_code == 137
    request = ExecRequest(argv=("sh", "-c", "head -c 300000 /dev/zero"), output_limit=1000)
    big = run_runc_exec(fake, request, files)
    assert len(big.stdout) == 1000 and big.stdout_truncated


def test_output_reaches_the_sink_before_the_command_ends(fake):
    arrivals = []
    run_runc_exec(fake, ExecRequest(argv=("sh", "-c", "echo first; sleep 1; echo second")), files,
                  lambda stream, data: arrivals.append((time.monotonic(), data)))
    ended = time.monotonic()
    assert arrivals[0][1] == b"first\n" and ended - arrivals[0][0] > 0.8


def test_the_command_ends_when_its_process_does_not_when_its_background_children_do(fake):
    started = time.monotonic()
    result = run_runc_exec(fake, ExecRequest(argv=("sh", "-c", "sleep 3 & echo started")), files)
    assert (result.exit_code, result.stdout) == (0, b"started\n")
    assert time.monotonic() - started < 2


def test_a_command_runc_cannot_find_exits_127_with_runcs_message(fake):
    result = run_runc_exec(fake, ExecRequest(argv=("nosuchcmd",)), files)
    assert result.exit_code == 127 and b"nosuchcmd" in result.stderr


def test_at_its_timeout_the_command_and_its_children_are_killed(fake, tmp_path):
    marker = tmp_path / "children"
    started = time.monotonic()
    result = run_runc_exec(fake, ExecRequest(argv=("sh", "-c", f"sleep 297 & echo $! > {marker}; sleep 296"),
                                             timeout=1.0), files)
    assert result.timed_out and result.exit_code is None and result.signal == 9
    assert time.monotonic() - started < 4
    child = int(marker.read_text())
    deadline = time.monotonic() + 3
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_a_caller_that_gives_up_leaves_no_command_running(fake, tmp_path):
    marker = tmp_path / "pid"

    def give_up(stream, data):
        raise ConnectionError("the client went away")

    with pytest.raises(ConnectionError):
        request = ExecRequest(argv=("sh", "-c", f"echo $$ > {marker}; echo go; sleep 295"))
        run_runc_exec(fake, request, files, give_up)
    pid = int(marker.read_text())
    deadline = time.monotonic() + 3
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --- the engine's choice --------------------------------------------------------------------


def engine(uri="unix:///run/podman/podman.sock", path="auto") -> DockerEngine:
    found = DockerEngine(uri=uri, options=NodeOptions(node_name="n1", docker_exec=path))
    found._libpod_inspect = lambda name: {"Id": name}
    found._oci_runtime_path = lambda: "/usr/bin/runc"
    return found


@pytest.fixture
def paths(monkeypatch):
    """Records which path each command took; runc applies to every container."""
    taken = []
    monkeypatch.setattr(runc_exec, "runc_target", lambda inspect, runtime: target(container_id=inspect["Id"]))
    def through(path, code=0):
        return lambda *args, **kwargs: taken.append(path) or ExecResult(exit_code=code)

    monkeypatch.setattr(runc_exec, "run_runc_exec", through("runc"))
    monkeypatch.setattr(guest_exec, "run_exec", through("api"))
    return taken


class Vm:
    name = "vm-1"


def test_auto_times_both_once_logs_the_gain_and_then_uses_runc(paths, caplog):
    found = engine()
    with caplog.at_level(logging.INFO, logger="engines.docker.engine"):
        found.exec(Vm, ExecRequest(argv=("ls",)))
        found.exec(Vm, ExecRequest(argv=("ls",)))
    assert paths == ["runc", "api", "runc", "runc"]  # the calibration's two, then the commands
    said = [r.getMessage() for r in caplog.records if "exec through" in r.getMessage()]
    assert len(said) == 1 and "exec through runc directly on node n1:" in said[0] and "faster" in said[0]


def test_auto_keeps_the_api_when_runc_disagrees_with_it(paths, monkeypatch):
    monkeypatch.setattr(runc_exec, "run_runc_exec", lambda *args, **kw: paths.append("runc") or ExecResult(1))
    found = engine()
    found.exec(Vm, ExecRequest(argv=("ls",)))
    assert paths == ["runc", "api", "api"] and found.exec_path == "api"


def test_api_forced_never_runs_runc(paths):
    engine(path="api").exec(Vm, ExecRequest(argv=("ls",)))
    assert paths == ["api"]


def test_runc_forced_skips_the_calibration(paths):
    engine(path="runc").exec(Vm, ExecRequest(argv=("ls",)))
    assert paths == ["runc"]


def test_a_remote_engine_takes_the_api_and_runc_forced_refuses_it(paths):
    engine(uri="tcp://10.0.0.2:2375").exec(Vm, ExecRequest(argv=("ls",)))
    assert paths == ["api"]
    with pytest.raises(EngineError, match="not on this host"):
        engine(uri="tcp://10.0.0.2:2375", path="runc").exec(Vm, ExecRequest(argv=("ls",)))


def test_a_container_runc_cannot_run_falls_back_to_the_api_saying_so_once(paths, monkeypatch, caplog):
    def refuse(inspect, runtime):
        raise NotApplicable("its OCI runtime is crun")

    monkeypatch.setattr(runc_exec, "runc_target", refuse)
    found = engine()
    with caplog.at_level(logging.INFO, logger="engines.docker.engine"):
        found.exec(Vm, ExecRequest(argv=("ls",)))
        found.exec(Vm, ExecRequest(argv=("ls",)))
    assert paths == ["api", "api"]
    said = [r for r in caplog.records if r.levelno >= logging.INFO and "crun" in r.getMessage()]
    assert len(said) == 1 and "exec through podman's API on node n1" in said[0].getMessage()


def test_once_auto_chose_runc_a_container_it_cannot_run_still_takes_the_api(paths, monkeypatch):
    found = engine()
    found.exec(Vm, ExecRequest(argv=("ls",)))
    assert found.exec_path == "runc"

    def refuse(inspect, runtime):
        raise NotApplicable("it has added groups")

    monkeypatch.setattr(runc_exec, "runc_target", refuse)
    found.exec(Vm, ExecRequest(argv=("ls",)))
    assert paths[-1] == "api"


def test_an_unknown_path_setting_is_refused():
    with pytest.raises(EngineError) as raised:
        DockerEngine(uri="unix:///x.sock", options=NodeOptions(docker_exec="fast"))
    assert raised.value.field == "docker_exec"
