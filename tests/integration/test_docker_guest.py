"""Into a running container on a real docker node (podman's exec and archive APIs), what a
user of exec and files checks: commands, their output and exit codes, the kill at a
timeout, stdin, a 20 MiB file each way, the errors. Engine calls, one container each.

The node's podman runs on this host, so commands go through `runc exec` directly (the
engine's default, TT_DOCKER_EXEC=auto): the last test runs the same commands through
podman's exec API too, and checks the two give the process the same confinement."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time

import pytest

from engines.docker.engine import DockerEngine
from engines.errors import EngineError, ErrorCode
from engines.guest_io import ExecRequest, GuestPathMissing
from nodes.registry import get_engine


def run(engine, spec, *argv, **kwargs):
    return engine.exec(spec, ExecRequest(argv=argv, **kwargs))


@pytest.fixture
def container(boot_containers, dnode):
    """(engine, spec) of one running container."""
    vm = boot_containers(ports=(80,)).vms.get()
    return get_engine(dnode), vm.to_spec()


def test_commands_run_in_the_container_with_their_output_exit_code_and_timeout(container):
    engine, spec = container
    uname = run(engine, spec, "uname", "-a")
    assert uname.exit_code == 0 and uname.stdout.startswith(b"Linux ") and not uname.timed_out

    failed = run(engine, spec, "sh", "-c", "echo to-out; echo to-err >&2; exit 3")
    assert (failed.exit_code, failed.stdout, failed.stderr) == (3, b"to-out\n", b"to-err\n")

    # stdin passed through, and more of it than a pipe holds
    data = os.urandom(1024 * 1024)
    assert run(engine, spec, "cat", stdin=data, output_limit=len(data)).stdout == data
    assert run(engine, spec, "wc", "-c", stdin=b"12345").stdout.strip() == b"5"

    # env, cwd and user
    who = run(engine, spec, "sh", "-c", 'id -u; pwd; echo "$GREETING"', env=(("GREETING", "hi there"),),
              cwd="/tmp", user="1000")
    assert who.stdout == b"1000\n/tmp\nhi there\n"
    with pytest.raises(EngineError) as raised:
        run(engine, spec, "id", user="nosuchuser")
    assert raised.value.field == "user"

    # output past the limit is cut and says so
    big = run(engine, spec, "sh", "-c", "yes | head -c 300000", output_limit=1000)
    assert len(big.stdout) == 1000 and big.stdout_truncated

    # at its timeout the command is killed, and the children its shell started with it
    started = time.monotonic()
    slow = run(engine, spec, "sh", "-c", "sleep 298 & sleep 299; echo never", timeout=1.0)
    assert slow.timed_out and slow.exit_code is None and b"never" not in slow.stdout
    assert time.monotonic() - started < 5
    processes = run(engine, spec, "ps").stdout.decode()
    assert "sleep 298" not in processes and "sleep 299" not in processes


def test_output_streams_before_the_command_ends(container):
    engine, spec = container
    arrivals = []
    result = engine.exec(spec, ExecRequest(argv=("sh", "-c", "echo first; sleep 3; echo second")),
                         lambda stream, data: arrivals.append((time.monotonic(), stream, data)))
    ended = time.monotonic()
    assert result.exit_code == 0 and result.stdout == b"first\nsecond\n"
    first_at, stream, data = arrivals[0]
    assert (stream, data) == ("stdout", b"first\n")
    assert ended - first_at > 2.5  # it came while the command still slept


def test_a_20_mib_file_goes_in_and_out_unchanged_with_its_mode_and_owner(container):
    engine, spec = container
    data = os.urandom(20 * 1024 * 1024)
    chunks = (data[i:i + 1024 * 1024] for i in range(0, len(data), 1024 * 1024))
    assert engine.file_put(spec, "/tmp/big.bin", chunks, mode=0o640, owner="1000:1000") == len(data)

    inside = run(engine, spec, "sh", "-c", "stat -c '%a %u %g %s' /tmp/big.bin; sha256sum /tmp/big.bin")
    mode_line, sum_line = inside.stdout.decode().splitlines()
    assert mode_line == f"640 1000 1000 {len(data)}"
    assert sum_line.split()[0] == hashlib.sha256(data).hexdigest()

    digest = hashlib.sha256()
    with engine.file_get(spec, "/tmp/big.bin") as file:
        for chunk in file:
            digest.update(chunk)
    assert file.size == len(data) and digest.hexdigest() == hashlib.sha256(data).hexdigest()

    # replaced whole, no temporary file left beside it; the listing shows it
    engine.file_put(spec, "/tmp/big.bin", iter([b"small now\n"]), owner="root")
    assert run(engine, spec, "cat", "/tmp/big.bin").stdout == b"small now\n"
    entries = {e.name: e for e in engine.file_list(spec, "/tmp")}
    assert list(entries) == ["big.bin"]
    assert (entries["big.bin"].kind, entries["big.bin"].size, entries["big.bin"].mode) == ("file", 10, 0o644)
    assert {"bin", "etc", "init"} <= {e.name for e in engine.file_list(spec, "/")}


def test_missing_paths_and_directories_are_refused(container):
    engine, spec = container
    with pytest.raises(GuestPathMissing):
        engine.file_get(spec, "/tmp/no-such-file")
    with pytest.raises(GuestPathMissing):
        engine.file_put(spec, "/no-such-dir/f", iter([b"x"]))
    assert run(engine, spec, "ls", "/no-such-dir").exit_code != 0  # not made on the way
    with pytest.raises(GuestPathMissing):
        engine.file_list(spec, "/no-such-dir")
    with pytest.raises(EngineError) as raised:
        engine.file_get(spec, "/etc")
    assert (raised.value.code, raised.value.field) == (ErrorCode.INVALID, "path")


# What a process's confinement is made of, as it sees it: capabilities, the seccomp filter,
# no_new_privs, ids and groups, its cgroups, namespaces, rlimits, LSM label, OOM score, env.
CONFINEMENT = (
    "grep -E '^(Cap|Seccomp|NoNewPrivs|Uid|Gid|Groups)' /proc/self/status; cat /proc/self/cgroup; "
    "for n in /proc/self/ns/*; do echo \"$n $(readlink $n)\"; done; cat /proc/self/limits; "
    "cat /proc/self/attr/current 2>&1; cat /proc/self/oom_score_adj; umask; pwd; env | sort"
)


def test_runc_exec_gives_the_process_what_podmans_exec_api_gives(container, caplog):
    engine, spec = container
    node = engine.options
    through_api = DockerEngine(uri=engine.uri, options=dataclasses.replace(node, docker_exec="api"))
    auto = DockerEngine(uri=engine.uri, options=dataclasses.replace(node, docker_exec="auto"))
    with caplog.at_level(logging.INFO, logger="engines.docker.engine"):
        assert run(auto, spec, "true").exit_code == 0
    assert auto.exec_path == "runc"  # podman on this host: auto chose runc, and said so once
    said = caplog.text
    assert "exec through runc directly on node" in said and "ms faster than podman's API" in said

    # a user with supplementary groups, as podman finds them in the container's files
    assert run(through_api, spec, "sh", "-c", "echo tester:x:1000:1000::/home/tester:/bin/sh >> /etc/passwd; "
               "echo staff:x:50:tester >> /etc/group").exit_code == 0
    for user in ("", "tester", "1000:50"):
        both = [run(engine_, spec, "sh", "-c", CONFINEMENT, user=user, env=(("GREETING", "hi"),), cwd="/tmp")
                for engine_ in (auto, through_api)]
        direct, api = (result.stdout.decode() for result in both)
        assert both[0].exit_code == both[1].exit_code == 0
        assert direct == api, f"user {user!r}"
        assert "GREETING=hi" in direct and "Seccomp:\t2" in direct
    pid1 = run(auto, spec, "grep", "-E", "^Cap(Eff|Bnd)", "/proc/1/status").stdout
    own = run(auto, spec, "grep", "-E", "^Cap(Eff|Bnd)", "/proc/self/status").stdout
    assert own == pid1  # root in the exec: exactly the capabilities of the container's process

    # the same behaviour both ways: exit code and streams, stdin, errors, the kill at a timeout
    for engine_ in (auto, through_api):
        failed = run(engine_, spec, "sh", "-c", "cat; echo to-err >&2; exit 3", stdin=b"in\n")
        assert (failed.exit_code, failed.stdout, failed.stderr) == (3, b"in\n", b"to-err\n")
        assert run(engine_, spec, "no-such-command").exit_code == 127
        assert run(engine_, spec, "sh", "-c", "kill -9 $$").exit_code == 137
        assert all(run(engine_, spec, "true").exit_code == 0 for _ in range(5))  # however fast it ends
        started = time.monotonic()  # the command ends with its process, not with what it left running
        background = run(engine_, spec, "sh", "-c", "sleep 20 & echo started")
        assert (background.exit_code, background.stdout) == (0, b"started\n")
        assert time.monotonic() - started < 5
        with pytest.raises(EngineError) as raised:
            run(engine_, spec, "id", user="nosuchuser")
        assert raised.value.field == "user"
        slow = run(engine_, spec, "sh", "-c", "sleep 288 & sleep 289", timeout=1.0)
        assert slow.timed_out and slow.exit_code is None
        assert "sleep 28" not in run(engine_, spec, "ps").stdout.decode()
