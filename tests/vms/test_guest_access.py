"""The services into a running guest (vms/guest_access.py): every input rule refused with
the field named and nothing recorded, the checks of guest_target (feature, state, who),
rate limits, and what the operation history keeps (never the output or a file's content)."""

from __future__ import annotations

import pytest

from engines.specs import Feature
from operations.models import Operation
from tests.support import refused
from tests.vms.guest_support import FakeGuest, install
from ttportal import limits
from ttportal.errors import (
    ConflictingInput,
    EngineError,
    Forbidden,
    IllegalState,
    InvalidInput,
    NotFound,
    RateLimited,
    TooLarge,
    Unsupported,
)
from vms import guest_access
from vms.guest_target import guest_target
from vms.models import Vm


@pytest.fixture
def vm(alice, make_env, guest) -> Vm:
    return make_env(alice).vms.get()


def _exec(vm, by, **kwargs):
    kwargs.setdefault("command", ["echo", "hi"])
    return guest_access.vm_exec(vm, by=by, **kwargs)


# --- exec -------------------------------------------------------------------------------


def test_it_runs_a_command_and_records_it_without_its_output(vm, alice, guest):
    result = _exec(vm, alice, command=["echo", "secret-output"])
    assert (result.exit_code, result.stdout) == (0, b"secret-output\n")
    op = Operation.objects.get(vm=vm, kind="vm_exec")
    assert (op.status, op.requested_by, op.error_code) == ("succeeded", alice, "")
    assert op.params["command"] == ["echo", "secret-output"]
    assert (op.params["exit_code"], op.params["timed_out"]) == (0, False)
    assert "duration_ms" in op.params
    assert "secret-output\n" not in str(op.params) and "stdout" not in op.params


def test_it_passes_stdin_env_cwd_timeout_and_user(vm, alice, guest):
    result = _exec(vm, alice, command=["cat"], stdin="héllo\n", env={"A_B": "1=2"}, cwd="/tmp", timeout=5,
                   user="tt")
    assert result.stdout == "héllo\n".encode()
    (request,) = guest.requests
    assert (request.env, request.cwd, request.timeout, request.user) == ((("A_B", "1=2"),), "/tmp", 5.0, "tt")
    op = Operation.objects.get(kind="vm_exec")
    assert "héllo" not in str(op.params) and "1=2" not in str(op.params)


def test_a_failing_command_is_a_succeeded_exec_with_its_exit_code(vm, alice):
    result = _exec(vm, alice, command=["fail"])
    assert (result.exit_code, result.stderr) == (3, b"boom\n")
    assert Operation.objects.get(kind="vm_exec").params["exit_code"] == 3


def test_a_command_past_its_timeout_is_recorded_as_timed_out(vm, alice):
    result = _exec(vm, alice, command=["sleep", "60"], timeout=2)
    assert (result.timed_out, result.exit_code) == (True, None)
    assert Operation.objects.get(kind="vm_exec").params["timed_out"] is True


def test_the_history_keeps_a_long_command_bounded(vm, alice):
    _exec(vm, alice, command=["echo", *["x" * 1000] * 100])
    params = Operation.objects.get(kind="vm_exec").params
    assert len(params["command"]) == guest_access.RECORDED_ARGS and params["args"] == 101
    assert all(len(arg) <= guest_access.RECORDED_ARG_CHARS for arg in params["command"])


@pytest.mark.parametrize(("command", "error", "field", "rule"), [
    ("echo hi", InvalidInput, "command", "non-empty list"),
    ([], InvalidInput, "command", "non-empty list"),
    (["echo"] * (limits.EXEC_ARGV_MAX + 1), InvalidInput, "command", f"at most {limits.EXEC_ARGV_MAX}"),
    (["echo", 3], InvalidInput, "command[1]", "must be a string"),
    (["echo", "a\x00b"], InvalidInput, "command[1]", "NUL"),
    (["echo", "x" * (limits.EXEC_ARG_MAX + 1)], InvalidInput, "command[1]", f"at most {limits.EXEC_ARG_MAX}"),
    (["", "x"], ConflictingInput, "command[0]", "name the program"),
])
def test_it_refuses_a_bad_command_naming_the_field_and_records_nothing(vm, alice, db_state, command, error,
                                                                        field, rule):
    with refused(db_state, error) as caught:
        _exec(vm, alice, command=command)
    assert caught.value.field == field and rule in caught.value.message


@pytest.mark.parametrize(("kwargs", "error", "field", "rule"), [
    ({"stdin": "a\x00"}, InvalidInput, "stdin", "NUL"),
    ({"stdin": "x" * (limits.EXEC_STDIN_MAX + 1)}, InvalidInput, "stdin", "at most"),
    ({"stdin": b"bytes"}, InvalidInput, "stdin", "string"),
    ({"env": ["A=1"]}, InvalidInput, "env", "object"),
    ({"env": {f"V{i}": "" for i in range(limits.EXEC_ENV_MAX + 1)}}, InvalidInput, "env", "at most"),
    ({"env": {"A=B": "1"}}, ConflictingInput, "env", "variable name"),
    ({"env": {"": "1"}}, ConflictingInput, "env", "variable name"),
    ({"env": {"1A": "1"}}, ConflictingInput, "env", "variable name"),
    ({"env": {"A": "a\x00"}}, InvalidInput, "env.A", "NUL"),
    ({"env": {"A": "x" * (limits.EXEC_ENV_VALUE_MAX + 1)}}, InvalidInput, "env.A", "at most"),
    ({"cwd": "tmp"}, InvalidInput, "cwd", "absolute"),
    ({"cwd": "/t\x00mp"}, InvalidInput, "cwd", "absolute"),
    ({"cwd": "/" + "x" * limits.GUEST_PATH_MAX}, InvalidInput, "cwd", "at most"),
    ({"timeout": 0}, InvalidInput, "timeout", "between 1 and 600"),
    ({"timeout": 601}, InvalidInput, "timeout", "between 1 and 600"),
    ({"timeout": "30"}, InvalidInput, "timeout", "between 1 and 600"),
    ({"timeout": True}, InvalidInput, "timeout", "between 1 and 600"),
    ({"user": "ro ot"}, InvalidInput, "user", "user name"),
    ({"user": "x" * 33}, InvalidInput, "user", "user name"),
])
def test_it_refuses_bad_input_naming_the_field_and_records_nothing(vm, alice, db_state, guest, kwargs, error,
                                                                   field, rule):
    with refused(db_state, error) as caught:
        _exec(vm, alice, **kwargs)
    assert caught.value.field == field and rule in caught.value.message
    assert not guest.requests


def test_an_engine_failure_is_recorded_as_failed_with_its_code(vm, alice):
    with pytest.raises(EngineError):
        _exec(vm, alice, command=["crash"])
    op = Operation.objects.get(kind="vm_exec")
    assert (op.status, op.error_code) == ("failed", "guest_exec")


def test_a_guest_with_nothing_answering_is_unsupported_and_recorded_as_failed(vm, alice):
    with pytest.raises(Unsupported):
        _exec(vm, alice, command=["noagent"])
    op = Operation.objects.get(kind="vm_exec")
    assert (op.status, op.error_code) == ("failed", "unsupported_feature")


def test_a_template_without_exec_is_refused_naming_the_feature(vm, alice, db_state, template):
    template.features = ["files"]
    template.save()
    with refused(db_state, Unsupported) as caught:
        _exec(vm, alice)
    assert "lacks the feature exec" in caught.value.message


def test_an_engine_without_exec_is_refused_naming_the_feature(vm, alice, db_state, monkeypatch):
    install(monkeypatch, FakeGuest(), features=())
    from engines.libvirt.engine import LibvirtEngine

    monkeypatch.setattr(LibvirtEngine, "features", LibvirtEngine.features - {Feature.EXEC})
    with refused(db_state, Unsupported) as caught:
        _exec(vm, alice)
    assert "engine" in caught.value.message and "lacks the feature exec" in caught.value.message


def test_a_firecracker_node_is_refused_naming_the_feature(vm, alice, db_state):
    from nodes.models import Node

    Node.objects.filter(pk=vm.node_id).update(kind="firecracker")
    vm.node.refresh_from_db()
    with refused(db_state, Unsupported) as caught:
        _exec(vm, alice)
    assert "firecracker engine" in caught.value.message and "exec" in caught.value.message


def test_a_vm_not_running_is_refused(vm, alice, db_state):
    Vm.objects.filter(pk=vm.pk).update(status=Vm.Status.STOPPED)
    with refused(db_state, IllegalState):
        _exec(vm, alice)


def test_another_user_is_refused(vm, bob, db_state):
    with refused(db_state, Forbidden):
        _exec(vm, bob)


def test_it_rate_limits_commands_per_user(vm, alice, settings, db_state):
    settings.TT_RATE_EXEC = "2/m"
    _exec(vm, alice)
    _exec(vm, alice)
    with refused(db_state, RateLimited) as caught:
        _exec(vm, alice)
    assert caught.value.limit_name == "exec"


def test_it_caps_the_commands_one_user_runs_at_once(vm, alice, settings, db_state):
    settings.TT_MAX_EXECS_PER_USER = 1
    held = guest_access.prepare_exec(vm, by=alice, command=["echo"])
    with refused(db_state, RateLimited) as caught:
        _exec(vm, alice)
    assert caught.value.limit_name == "concurrent_execs"
    guest_access.run_exec(held)
    _exec(vm, alice)  # its slot was given back


# --- files ------------------------------------------------------------------------------


def _put(vm, by, path="/tmp/f", data=b"hello", **kwargs):
    chunks = [data[i:i + 2] for i in range(0, len(data), 2)]
    return guest_access.vm_file_put(vm, by=by, path=path, chunks=iter(chunks), size=len(data), **kwargs)


def test_it_uploads_a_file_with_its_mode_and_owner_and_records_it(vm, alice, guest):
    assert _put(vm, alice, mode="0640", owner="tt:tt") == 5
    assert guest.files["/tmp/f"] == b"hello"
    assert (guest.modes["/tmp/f"], guest.owners["/tmp/f"]) == (0o640, "tt:tt")
    op = Operation.objects.get(kind="vm_file_put")
    assert op.status == "succeeded"
    assert (op.params["path"], op.params["bytes"], op.params["direction"]) == ("/tmp/f", 5, "put")
    assert "hello" not in str(op.params)


def test_it_downloads_a_file_and_records_the_bytes_handed_out(vm, alice, guest):
    guest.files["/tmp/f"] = b"x" * 200_000
    with guest_access.vm_file_get(vm, by=alice, path="/tmp/f") as opened:
        assert opened.size == 200_000
        assert b"".join(opened) == b"x" * 200_000
    op = Operation.objects.get(kind="vm_file_get")
    assert (op.status, op.params["bytes"], op.params["complete"]) == ("succeeded", 200_000, True)
    assert guest.closed == ["/tmp/f"]


def test_it_lists_a_directory_and_records_nothing(vm, alice, guest):
    guest.files.update({"/srv/a": b"1", "/srv/b": b"22", "/srv/sub/c": b""})
    entries = guest_access.vm_file_list(vm, by=alice, path="/srv")
    assert [(e.name, e.size) for e in entries] == [("a", 1), ("b", 2)]
    assert not Operation.objects.filter(kind__startswith="vm_file").exists()


@pytest.mark.parametrize(("path", "error"), [
    ("/missing/f", NotFound), ("/root/f", Forbidden),
])
def test_a_guest_refusal_is_recorded_as_failed_and_answered_as_its_refusal(vm, alice, path, error):
    with pytest.raises(error):
        _put(vm, alice, path=path)
    with pytest.raises(error):
        guest_access.vm_file_get(vm, by=alice, path=path)
    codes = set(Operation.objects.filter(kind__startswith="vm_file").values_list("status", "error_code"))
    assert codes == {("failed", error.code)}


@pytest.mark.parametrize(("kwargs", "field", "rule"), [
    ({"path": "relative"}, "path", "absolute"),
    ({"path": "/a\x00b"}, "path", "absolute"),
    ({"path": "/" + "x" * limits.GUEST_PATH_MAX}, "path", "at most"),
    ({"mode": "0999"}, "mode", "octal"),
    ({"mode": "17777"}, "mode", "octal"),
    ({"mode": 0o10000}, "mode", "octal"),
    ({"mode": -1}, "mode", "octal"),
    ({"owner": "root:"}, "owner", "user:group"),
    ({"owner": "a b"}, "owner", "user:group"),
])
def test_it_refuses_a_bad_upload_naming_the_field_and_records_nothing(vm, alice, db_state, guest, kwargs,
                                                                      field, rule):
    with refused(db_state, InvalidInput) as caught:
        _put(vm, alice, **kwargs)
    assert caught.value.field == field and rule in caught.value.message
    assert not guest.files


def test_an_upload_past_the_limit_is_refused_before_the_guest_sees_a_byte(vm, alice, db_state, guest,
                                                                         settings):
    settings.TT_FILE_MAX_MB = 1
    with refused(db_state, TooLarge) as caught:
        guest_access.vm_file_put(vm, by=alice, path="/tmp/big", chunks=iter([b"x"]), size=1024 * 1024 + 1)
    assert caught.value.limit == 1024 * 1024
    assert not guest.files and not guest.chunks_seen


def test_a_body_longer_than_declared_is_cut_and_recorded_as_failed(vm, alice, guest):
    with pytest.raises(InvalidInput) as caught:
        guest_access.vm_file_put(vm, by=alice, path="/tmp/f", chunks=iter([b"abc", b"def"]), size=4)
    assert caught.value.field == "body"
    assert Operation.objects.get(kind="vm_file_put").status == "failed"


def test_a_template_without_files_is_refused_naming_the_feature(vm, alice, db_state, template):
    template.features = ["exec"]
    template.save()
    with refused(db_state, Unsupported) as caught:
        _put(vm, alice)
    assert "lacks the feature files" in caught.value.message


def test_it_rate_limits_file_copies_per_user(vm, alice, settings, db_state):
    settings.TT_RATE_FILES = "1/m"
    _put(vm, alice)
    with refused(db_state, RateLimited) as caught:
        guest_access.vm_file_list(vm, by=alice, path="/tmp")
    assert caught.value.limit_name == "files"


# --- who may: the model's permissions, console included ------------------------------------


@pytest.mark.parametrize(("feature", "perm"), [
    (Feature.EXEC, "vms.exec_vm"), (Feature.FILES, "vms.files_vm"), (Feature.CONSOLE, "vms.console_vm"),
])
def test_staff_go_in_only_with_the_ways_own_permission(vm, feature, perm, olga):
    from tests.conftest import make_staff

    others = {"vms.exec_vm", "vms.files_vm", "vms.console_vm", "vms.change_vm"} - {perm}
    assert guest_target(vm, feature, by=make_staff("pat", perm)).vm == vm
    with pytest.raises(Forbidden):
        guest_target(vm, feature, by=make_staff("sam", *others))
    assert guest_target(vm, feature, by=olga).vm == vm  # the operators' group holds them all

