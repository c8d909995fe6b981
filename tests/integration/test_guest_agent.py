"""Commands and files in a real Debian guest through its QEMU guest agent, by the engine's
calls (engines/libvirt/guest_agent.py), as the API's exec and files endpoints make them.

One VM boot for every check: a boot costs about a minute under TCG.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from engines.guest_io import ExecRequest, GuestPathMissing
from engines.libvirt import guest_agent
from envs.models import Env
from envs.services import env_create
from nodes.registry import get_engine
from tests.integration.conftest import run
from tests.integration.test_debian import debian_vm, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

MIB = 1024 * 1024


def test_commands_and_files_in_a_debian_guest(qnode, debian, alice, run_tasks, monkeypatch):
    # Finished commands' output files are swept every few commands here, not every 32nd, so
    # that sweeps run beside the commands below.
    monkeypatch.setattr(guest_agent, "SWEEP_EVERY", 3)
    op = run(env_create, run_tasks, owner=alice, by=alice, name="agent", vms=[debian_vm("web")])
    web = Env.objects.get(pk=op.env_id).vms.get()
    vm, engine = web.to_spec(), get_engine(qnode)
    wait_for(lambda: engine.guest_addresses(vm), "answer from the guest agent", 300)

    def run_in_guest(*argv, on_output=None, **kwargs):
        return engine.exec(vm, ExecRequest(argv=argv, **kwargs), on_output)

    uname = run_in_guest("uname", "-a")
    assert uname.exit_code == 0 and uname.stdout.startswith(b"Linux web "), uname
    assert uname.stderr == b"" and not uname.timed_out and uname.duration_ms > 0

    failed = run_in_guest("sh", "-c", "echo to-out; echo to-err >&2; exit 3")
    assert (failed.exit_code, failed.stdout, failed.stderr) == (3, b"to-out\n", b"to-err\n")
    assert run_in_guest("true").exit_code == 0
    assert run_in_guest("echo", "-n", "a\\tb").stdout == b"a\\tb"  # the program, not dash's builtin
    # The wrapper runs under the image's static busybox, and the guest's own programs still run
    # (not busybox's applets of the same names), under the names they were given.
    dom = engine._agent_domain(vm)
    assert guest_agent.SHELLS.of(guest_agent.Agent(dom), dom.UUIDString()) == guest_agent.BUSYBOX
    assert run_in_guest("ls", "--version").stdout.startswith(b"ls (GNU coreutils)")
    no_such = run_in_guest("ls", "/no/such/path")
    assert no_such.exit_code == 2 and no_such.stderr.startswith(b"ls: cannot access"), no_such
    assert run_in_guest("no-such-program").exit_code == 127
    killed = run_in_guest("sh", "-c", "kill -TERM $$")
    assert (killed.exit_code, killed.signal) == (None, 15), killed
    with pytest.raises(GuestPathMissing) as missing:
        run_in_guest("true", cwd="/no/such/dir")
    assert missing.value.field == "cwd"

    # The argv reaches the program as given, in the cwd and with the env asked for.
    where = run_in_guest("sh", "-c", 'pwd; printf "%s|" "$GREETING" "$@"', "sh", "a b", "$HOME",
                         cwd="/var/tmp", env=(("GREETING", "hi there"),))
    assert where.stdout == b"/var/tmp\nhi there|a b|$HOME|", where

    data = bytes(range(256)) * 8 + b"\0end"
    assert run_in_guest("cat", stdin=data).stdout == data

    # Past its timeout the command is killed, and what it started with it.
    started = time.monotonic()
    slow = run_in_guest("sh", "-c", "echo $$; sleep 300 & echo $!; wait", timeout=3)
    assert slow.timed_out and slow.exit_code is None, slow
    assert time.monotonic() - started < 60
    pids = slow.stdout.decode().split()
    assert len(pids) == 2
    alive = run_in_guest("sh", "-c", 'for p; do [ -e "/proc/$p" ] && echo "$p"; done; true', "sh", *pids)
    assert alive.stdout == b"", f"still running after the kill: {alive.stdout!r}"

    # Output streams as it comes: the first line well before the command ends.
    seen: list[tuple[float, bytes]] = []
    streamed = run_in_guest("sh", "-c", "echo first; sleep 3; echo second",
                            on_output=lambda stream, chunk: seen.append((time.monotonic(), chunk)))
    ended = time.monotonic()
    assert streamed.stdout == b"first\nsecond\n"
    assert seen[0][1] == b"first\n" and ended - seen[0][0] > 2, seen

    # 20 MiB up and down again, the same bytes.
    content = os.urandom(20 * MIB)
    pieces = (content[i:i + 64 * 1024] for i in range(0, len(content), 64 * 1024))
    assert engine.file_put(vm, "/var/tmp/big.bin", pieces, mode=0o640) == len(content)
    big = {entry.name: entry for entry in engine.file_list(vm, "/var/tmp")}["big.bin"]
    assert (big.kind, big.size, big.mode) == ("file", 20 * MIB, 0o640)
    digest = hashlib.sha256()
    with engine.file_get(vm, "/var/tmp/big.bin") as got:
        assert got.size == 20 * MIB
        for chunk in got:
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(content).hexdigest()
    assert run_in_guest("sha256sum", "/var/tmp/big.bin").stdout.split()[0].decode() == digest.hexdigest()

    with pytest.raises(GuestPathMissing):
        engine.file_get(vm, "/var/tmp/no-such-file")
    with pytest.raises(GuestPathMissing):
        engine.file_list(vm, "/no/such/dir")

    # No staging directory stays behind. Finished commands' output files wait in the agent's
    # directory for a sweep (every 3rd command here): a few, none big.
    assert run_in_guest("sh", "-c", "ls -A /var/tmp | grep tt-; true").stdout == b""
    left = run_in_guest("sh", "-c", "stat -c '%s %n' /var/lib/tt-agent/.tt-exec-*").stdout.decode()
    sizes = [int(line.split()[0]) for line in left.splitlines()]
    assert len(sizes) <= 2 * (3 + 2) and max(sizes) <= guest_agent.KEEP_MAX, left
