"""Commands and files through the QEMU guest agent (engines/libvirt/guest_agent.py), against
a small qemu-ga on this host (tests/engines/fake_guest_agent.py): its wrapper really runs
under /bin/sh, its files are real files. The real guest: tests/integration/test_guest_agent.py.
"""

from __future__ import annotations

import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from engines.errors import EngineError, ErrorCode
from engines.firecracker.engine import FirecrackerEngine
from engines.guest_io import ExecRequest, GuestPathDenied, GuestPathMissing, GuestUnreachable
from engines.libvirt import guest_agent
from engines.libvirt.engine import LibvirtEngine
from engines.specs import Feature
from tests.engines.fake_guest_agent import FakeGuestAgent, command_failed
from tests.support import TEST_URI

DOM = SimpleNamespace(UUIDString=lambda: "0f5e6a43-fake-guest")  # the fake answers for any domain


@pytest.fixture
def agent(monkeypatch, tmp_path) -> FakeGuestAgent:
    monkeypatch.setattr(guest_agent, "EXEC_DIR", str(tmp_path / "exec"))  # made on first use
    monkeypatch.setattr(guest_agent, "SWEEPER", guest_agent._Sweeper())  # none of other tests' files
    # No busybox in this "guest" unless a test gives it one (the wrapper runs under /bin/sh).
    monkeypatch.setattr(guest_agent, "BUSYBOX", str(tmp_path / "no-busybox"))
    monkeypatch.setattr(guest_agent, "SHELLS", guest_agent._Shells())
    return FakeGuestAgent().install(monkeypatch)


def fake_busybox(path: Path, script: str = 'shift; exec /bin/bash "$@"') -> str:
    """A stand-in for the guest's busybox at `path`: its `sh` is bash (which has `exec -a`, as
    busybox's sh has and dash has not). The real one: tests/integration/test_guest_agent.py."""
    applet = '[ "$1" = sh ] || { echo "$1: applet not found" >&2; exit 127; }'
    path.write_text(f"#!/bin/bash\n{applet}\n{script}\n")
    path.chmod(0o755)
    return str(path)


def run(*argv: str, **kwargs):
    return guest_agent.run(DOM, ExecRequest(argv=argv, **kwargs))


def leftovers(tmp_path: Path) -> list[str]:
    """What of ours is in the guest's filesystem besides finished commands' output files (left
    for the sweep)."""
    return sorted(p.name for p in tmp_path.rglob("*") if ".tt-" in p.name and p.parent.name != "exec")


def exec_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "exec").glob(".tt-exec-*"))


# --- exec ---------------------------------------------------------------------------------


def test_the_argv_reaches_the_program_as_given_never_through_a_shell(agent, tmp_path):
    args = ["two words", "$HOME", "`id`", "a;b", "'quoted\"", "-n", "", "*"]
    result = run("printf", "%s|", *args)
    assert result.exit_code == 0
    assert result.stdout.decode() == "".join(f"{a}|" for a in args)
    assert result.stderr == b"" and not result.timed_out and result.duration_ms >= 0
    # Its output files are in a directory of root's alone (qemu-ga makes its new files 0666).
    assert stat.S_IMODE((tmp_path / "exec").stat().st_mode) == 0o700
    assert leftovers(tmp_path) == []


def test_a_quiet_command_costs_no_file_call(agent):
    assert run("true").exit_code == 0
    assert [c["execute"] for c in agent.sent if c["execute"].startswith("guest-file")] == []
    run("sh", "-c", "echo only-err >&2")
    assert [c["execute"] for c in agent.sent if c["execute"].startswith("guest-file")] == [
        "guest-file-open", "guest-file-read", "guest-file-close"]  # stderr's only


def test_builtin_names_run_the_program_not_the_wrappers_shell(agent):
    assert run("echo", "-n", "a\\tb").stdout == b"a\\tb"  # /bin/echo; dash's would expand \t
    result = run("exit", "3")  # no program `exit`: the wrapper must not take it as its own
    assert result.exit_code == 127 and b"exit" in result.stderr


def test_finished_commands_files_are_swept_in_batches_and_big_ones_emptied_at_once(agent, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setattr(guest_agent, "SWEEP_EVERY", 3)
    monkeypatch.setattr(guest_agent, "KEEP_MAX", 1000)
    orphan = tmp_path / "exec" / ".tt-exec-1000-deadbeef.out"  # of a process long gone
    run("true")
    orphan.write_bytes(b"old")
    big = run("head", "-c", "5000", "/dev/zero")
    assert len(big.stdout) == 5000
    run("true")
    sizes = {p.name: p.stat().st_size for p in exec_files(tmp_path)}
    assert len(sizes) == 7 and max(sizes.values()) == 3  # 3 commands' two files, the orphan
    run("true")  # the fourth: its wrapper sweeps the first three and the orphan
    deadline = time.monotonic() + 5
    while len(exec_files(tmp_path)) > 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(exec_files(tmp_path)) == 2 and not orphan.exists()


def test_exit_code_and_stderr_come_back_apart(agent):
    result = run("sh", "-c", "echo out; echo oops >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"oops\n")


def test_env_and_cwd(agent, tmp_path):
    result = run("sh", "-c", 'echo "$GREETING"; pwd', env=(("GREETING", "hello $USER; bye"),),
                 cwd=str(tmp_path))
    assert result.stdout.decode().splitlines() == ["hello $USER; bye", str(tmp_path)]


def test_stdin_is_passed_through(agent):
    data = bytes(range(256)) * 4
    assert run("cat", stdin=data).stdout == data
    assert agent.commands("guest-exec")[-1]["input-data"]  # inline, with the command


def test_a_large_stdin_goes_through_a_file_that_does_not_stay(agent, tmp_path, monkeypatch):
    monkeypatch.setattr(guest_agent, "STDIN_INLINE_MAX", 100)
    data = os.urandom(1000)
    result = run("sha256sum", stdin=data)
    import hashlib
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    assert "input-data" not in agent.commands("guest-exec")[-1]
    assert leftovers(tmp_path) == []


def test_output_past_the_limit_is_cut_and_flagged_per_stream(agent):
    result = run("sh", "-c", "head -c 5000 /dev/zero; echo small >&2", output_limit=1000)
    assert result.stdout == b"\0" * 1000 and result.stdout_truncated
    assert result.stderr == b"small\n" and not result.stderr_truncated
    exact = run("head", "-c", "1000", "/dev/zero", output_limit=1000)
    assert len(exact.stdout) == 1000 and not exact.stdout_truncated


def test_streamed_output_arrives_before_the_command_ends_and_whole(agent):
    seen: list[tuple[float, str, bytes]] = []
    result = guest_agent.run(
        DOM, ExecRequest(argv=("sh", "-c", "echo first; sleep 1; echo second; head -c 3000 /dev/zero"),
                         output_limit=100),
        on_output=lambda stream, data: seen.append((time.monotonic(), stream, data)),
    )
    ended = time.monotonic()
    assert seen[0][1:] == ("stdout", b"first\n")
    assert ended - seen[0][0] > 0.5  # it came while `sleep 1` ran
    assert b"".join(data for _, _, data in seen) == b"first\nsecond\n" + b"\0" * 3000  # streamed whole
    assert len(result.stdout) == 100 and result.stdout_truncated  # kept: up to the limit


def test_a_command_past_its_timeout_is_killed_with_its_children(agent):
    started = time.monotonic()
    result = run("sh", "-c", "echo $$; sleep 60 & echo $!; wait", timeout=0.5)
    assert result.timed_out and result.exit_code is None and result.signal == 9
    assert time.monotonic() - started < 5
    for pid in map(int, result.stdout.split()):
        assert not alive(pid), f"process {pid} survived the kill"


def test_a_sweep_leaves_a_running_commands_files_alone(agent, tmp_path, monkeypatch):
    monkeypatch.setattr(guest_agent, "SWEEP_EVERY", 1)  # every command's wrapper sweeps
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(run, "sh", "-c", "sleep 1; echo late; echo late-err >&2")
        time.sleep(0.3)
        for _ in range(4):
            run("true")
        result = slow.result()
    assert (result.stdout, result.stderr) == (b"late\n", b"late-err\n")


def test_a_death_by_signal_is_named(agent):
    result = run("sh", "-c", "kill -TERM $$")
    assert (result.exit_code, result.signal, result.timed_out) == (None, 15, False)
    assert run("sh", "-c", "exit 255").exit_code == 255  # past any signal: an exit code


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie is dead, waiting for a parent to reap it


def test_a_missing_cwd_is_its_own_error(agent, tmp_path):
    with pytest.raises(GuestPathMissing) as caught:
        run("true", cwd=str(tmp_path / "nope"))
    assert caught.value.field == "cwd"
    assert leftovers(tmp_path) == []


def test_a_command_not_found_is_exit_127(agent):
    result = run("no-such-program-here")
    assert result.exit_code == 127 and b"no-such-program-here" in result.stderr


def test_the_wrapper_runs_under_busybox_when_the_guest_has_it_learned_once(agent, tmp_path, monkeypatch):
    busybox = fake_busybox(tmp_path / "busybox")
    monkeypatch.setattr(guest_agent, "BUSYBOX", busybox)
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "hello").write_text("#!/bin/sh\necho hello\n")
    (tools / "hello").chmod(0o755)
    (tools / "not-executable").write_text("#!/bin/sh\n")
    # A name is looked up in the command's PATH, and the program keeps the name it was given.
    found = run("hello", env=(("PATH", f"{tools}:/usr/bin:/bin"),))
    assert (found.exit_code, found.stdout) == (0, b"hello\n")
    assert run(str(tools / "hello")).stdout == b"hello\n"
    assert run("ls", "/no/such/path").stderr.startswith(b"ls: ")  # not /usr/bin/ls
    missing = run("not-executable", env=(("PATH", str(tools)),))
    assert (missing.exit_code, missing.stderr) == (127, b"sh: not-executable: not found\n")
    assert run("id", "-un", user="nobody").stdout == b"nobody\n"
    execs = agent.commands("guest-exec")
    assert [e["path"] for e in execs].count(busybox) == 1 + 5  # the probe, then every command
    assert "/bin/sh" not in [e["path"] for e in execs]


@pytest.mark.parametrize("busybox", ["missing", "no sh applet", "not executable"])
def test_a_guest_without_a_usable_busybox_runs_the_wrapper_under_bin_sh(agent, tmp_path, monkeypatch,
                                                                         busybox):
    path = tmp_path / "busybox"
    if busybox == "no sh applet":
        fake_busybox(path, "exit 127")
    elif busybox == "not executable":
        path.write_text("#!/bin/sh\n")
    monkeypatch.setattr(guest_agent, "BUSYBOX", str(path))
    for _ in range(3):
        assert run("sh", "-c", "echo ok").stdout == b"ok\n"
    paths = [e["path"] for e in agent.commands("guest-exec")]
    assert paths == [str(path), "/bin/sh", "/bin/sh", "/bin/sh"]  # learned once


def test_a_busybox_gone_since_it_was_learned_means_bin_sh_and_the_command_runs_once(agent, tmp_path,
                                                                                    monkeypatch):
    busybox = tmp_path / "busybox"
    monkeypatch.setattr(guest_agent, "BUSYBOX", fake_busybox(busybox))
    assert run("true").exit_code == 0
    busybox.unlink()  # the guest was rebuilt from another image, say
    counted = tmp_path / "count"
    assert run("sh", "-c", f"echo x >> {counted}").exit_code == 0
    assert counted.read_text() == "x\n"
    assert [e["path"] for e in agent.commands("guest-exec")][-3:] == [str(busybox), str(busybox), "/bin/sh"]


def test_a_user_runs_it_as_that_user(agent):
    assert run("id", "-un", user="nobody").stdout == b"nobody\n"
    with pytest.raises(EngineError) as caught:
        run("true", user="no-such-user")
    assert (caught.value.code, caught.value.field) == (ErrorCode.INVALID, "user")


@pytest.mark.parametrize(("field", "request_"), [
    ("command", ExecRequest(argv=())),
    ("command", ExecRequest(argv=("echo", "a\0b"))),
    ("env", ExecRequest(argv=("true",), env=(("BAD NAME", "x"),))),
    ("env", ExecRequest(argv=("true",), env=(("1X", "x"),))),
    ("cwd", ExecRequest(argv=("true",), cwd="relative")),
    ("user", ExecRequest(argv=("true",), user="-root")),
])
def test_what_the_agent_cannot_carry_is_refused_naming_the_field(agent, field, request_):
    with pytest.raises(EngineError) as caught:
        guest_agent.run(DOM, request_)
    assert (caught.value.code, caught.value.field) == (ErrorCode.INVALID, field)
    assert agent.sent == []  # nothing asked of the guest


def test_no_agent_answering_is_guest_unreachable(agent):
    agent.connected = False
    with pytest.raises(GuestUnreachable) as caught:
        run("true")
    assert caught.value.code == ErrorCode.UNSUPPORTED


# --- files --------------------------------------------------------------------------------


def test_an_upload_is_written_in_chunks_then_renamed_into_place(agent, tmp_path, monkeypatch):
    monkeypatch.setattr(guest_agent, "WRITE_CHUNK", 1000)
    data = os.urandom(2500)
    pieces = [data[:10], data[10:1900], data[1900:]]  # not the agent's chunk size
    target = tmp_path / "up.bin"
    assert guest_agent.put_file(DOM, str(target), iter(pieces)) == 2500
    assert target.read_bytes() == data
    writes = agent.commands("guest-file-write")
    assert [len(guest_agent.base64.b64decode(w["buf-b64"])) for w in writes] == [1000, 1000, 500]
    written_at = Path(agent.commands("guest-file-open")[0]["path"])
    # In a staging directory beside it (a rename then, within one filesystem), root's alone.
    assert written_at.parent.parent == tmp_path and written_at.parent.name.startswith(".tt-upload-")
    assert agent.stage_modes == [0o700]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # a new file
    assert leftovers(tmp_path) == [] and agent.files == {}


def test_a_replaced_file_keeps_its_mode_unless_told(agent, tmp_path):
    target = tmp_path / "tool"
    target.write_text("old")
    target.chmod(0o750)
    guest_agent.put_file(DOM, str(target), [b"new"])
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o750
    guest_agent.put_file(DOM, str(target), [b"newer"], mode=0o600, owner="nobody")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.stat().st_uid == 65534


def test_a_failed_upload_leaves_the_old_file_whole_and_no_temporary(agent, tmp_path, monkeypatch):
    monkeypatch.setattr(guest_agent, "WRITE_CHUNK", 100)
    target = tmp_path / "keep.txt"
    target.write_text("the old content")

    def broken():
        yield b"x" * 250
        assert target.read_text() == "the old content"  # untouched while it uploads
        raise ConnectionResetError("the client went away")

    with pytest.raises(ConnectionResetError):
        guest_agent.put_file(DOM, str(target), broken())
    assert target.read_text() == "the old content"
    assert leftovers(tmp_path) == [] and agent.files == {}


def test_upload_refusals(agent, tmp_path):
    with pytest.raises(GuestPathMissing) as caught:
        guest_agent.put_file(DOM, str(tmp_path / "no-dir" / "f"), [b"x"])
    assert caught.value.field == "path"
    with pytest.raises(EngineError) as caught:
        guest_agent.put_file(DOM, str(tmp_path), [b"x"])  # a directory is there
    assert (caught.value.code, caught.value.field) == (ErrorCode.INVALID, "path")
    with pytest.raises(EngineError) as caught:
        guest_agent.put_file(DOM, str(tmp_path / "f"), [b"x"], owner="no-such-user")
    assert (caught.value.code, caught.value.field) == (ErrorCode.INVALID, "owner")
    with pytest.raises(EngineError) as caught:
        guest_agent.put_file(DOM, "relative/f", [b"x"])
    assert caught.value.field == "path"
    assert leftovers(tmp_path) == [] and not (tmp_path / "f").exists()


def test_a_download_is_read_in_chunks_as_iterated(agent, tmp_path, monkeypatch):
    monkeypatch.setattr(guest_agent, "READ_CHUNK", 1000)
    data = os.urandom(2500)
    (tmp_path / "down.bin").write_bytes(data)
    with guest_agent.get_file(DOM, str(tmp_path / "down.bin")) as got:
        assert got.size == 2500
        reads_before = len(agent.commands("guest-file-read"))
        chunks = list(got)
    assert reads_before == 1  # only the first chunk before iterating
    assert [len(c) for c in chunks] == [1000, 1000, 500] and b"".join(chunks) == data
    assert agent.files == {}  # closed


def test_a_download_closed_early_lets_go_of_the_file(agent, tmp_path, monkeypatch):
    monkeypatch.setattr(guest_agent, "READ_CHUNK", 10)
    (tmp_path / "f").write_bytes(b"x" * 100)
    got = guest_agent.get_file(DOM, str(tmp_path / "f"))
    assert next(iter(got)) == b"x" * 10
    got.close()
    got.close()  # twice is fine
    assert agent.files == {}


def test_download_refusals_come_before_any_chunk(agent, tmp_path):
    with pytest.raises(GuestPathMissing):
        guest_agent.get_file(DOM, str(tmp_path / "missing"))
    with pytest.raises(EngineError) as caught:
        guest_agent.get_file(DOM, str(tmp_path))
    assert (caught.value.code, caught.value.field) == (ErrorCode.INVALID, "path")
    assert "is a directory" in caught.value.message
    agent.denied.add(str(tmp_path / "secret"))
    with pytest.raises(GuestPathDenied) as denied:
        guest_agent.get_file(DOM, str(tmp_path / "secret"))
    assert denied.value.code == ErrorCode.FORBIDDEN
    assert agent.files == {}


def test_a_directory_is_listed(agent, tmp_path):
    listed = tmp_path / "listed"
    listed.mkdir()
    (listed / "a file").write_bytes(b"12345")
    (listed / "a file").chmod(0o640)
    (listed / "sub").mkdir()
    (listed / "link").symlink_to("a file")
    entries = {e.name: e for e in guest_agent.list_dir(DOM, str(listed))}
    assert {name: e.kind for name, e in entries.items()} == {"a file": "file", "link": "link", "sub": "dir"}
    assert (entries["a file"].size, entries["a file"].mode) == (5, 0o640)
    assert abs(entries["a file"].mtime - (listed / "a file").stat().st_mtime) < 1


def test_listing_refusals(agent, tmp_path):
    with pytest.raises(GuestPathMissing):
        guest_agent.list_dir(DOM, str(tmp_path / "missing"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(EngineError) as caught:
        guest_agent.list_dir(DOM, str(tmp_path / "f"))
    assert (caught.value.code, caught.value.field) == (ErrorCode.INVALID, "path")


@pytest.mark.parametrize(("reason", "expected"), [
    ("failed to open file '/x' (mode: 'r'): No such file or directory", GuestPathMissing),
    ("failed to open file '/x/y' (mode: 'r'): Not a directory", GuestPathMissing),
    ("failed to open file '/x' (mode: 'w'): Permission denied", GuestPathDenied),
    ("failed to open file '/x' (mode: 'w'): Operation not permitted", GuestPathDenied),
    ("failed to open file '/x' (mode: 'w'): Read-only file system", GuestPathDenied),
    ("Command guest-exec has been disabled", GuestUnreachable),
])
def test_agent_errors_map_to_what_a_user_can_act_on(reason, expected):
    error = guest_agent.agent_failure(command_failed("guest-file-open", reason), "guest-file-open", "/x",
                                      ErrorCode.GUEST_FILES)
    assert type(error) is expected


def test_any_other_agent_error_is_the_calls_own_code(agent, tmp_path):
    full = command_failed("guest-file-write", "failed to write to file: No space left on device")
    error = guest_agent.agent_failure(full, "guest-file-write", "/x", ErrorCode.GUEST_FILES)
    assert error.code == ErrorCode.GUEST_FILES and "No space left" in error.message


# --- the engine -----------------------------------------------------------------------------


def test_the_qemu_engine_has_exec_and_files_and_firecracker_neither():
    assert {Feature.EXEC, Feature.FILES} <= LibvirtEngine.features
    assert not {Feature.EXEC, Feature.FILES} & FirecrackerEngine.features


def test_a_vm_that_is_not_running_has_no_agent_to_ask(agent, monkeypatch):
    engine = LibvirtEngine(uri=TEST_URI)
    monkeypatch.setattr(engine, "_domain", lambda vm: None)
    with pytest.raises(GuestUnreachable):
        engine.exec(SimpleNamespace(name="web"), ExecRequest(argv=("true",)))
    with pytest.raises(GuestUnreachable):
        engine.file_get(SimpleNamespace(name="web"), "/etc/hostname")
    assert agent.sent == []


def test_a_guests_commands_are_first_polled_when_they_can_have_ended():
    pace = guest_agent._Pace()
    assert pace.first("slow-guest") == guest_agent.POLL_FIRST_S  # nothing known yet
    for seconds in (0.3, 0.2, 0.5):
        pace.ended("slow-guest", seconds)
    assert pace.first("slow-guest") == pytest.approx(0.15)  # 3/4 of its quickest
    assert pace.first("other-guest") == guest_agent.POLL_FIRST_S
    for _ in range(guest_agent.PACE_WINDOW):
        pace.ended("slow-guest", 30.0)  # long commands only, lately: the next may be quick
    assert pace.first("slow-guest") == guest_agent.PACE_MAX_S
    delays = guest_agent._poll_delays(0.15)
    assert [round(next(delays), 3) for _ in range(4)] == [0.15, 0.05, 0.05, 0.05]
    quick = guest_agent._poll_delays(0.006)
    assert [round(next(quick), 3) for _ in range(6)] == [0.006, 0.002, 0.004, 0.008, 0.016, 0.032]
