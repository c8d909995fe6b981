"""Into a VM: tt ssh, tt exec, tt cp, tt console.

exec, cp and console go through the API (no SSH needed); a VM whose engine or template lacks
the feature is refused by the API with 422 unsupported_feature, shown as such."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from ttcli import config, output
from ttcli.commands.common import Json
from ttcli.errors import FAILED, TIMEOUT, USAGE, Failure

VmArg = Annotated[str, typer.Argument(metavar="ENV/VM", help="The VM, as ENV/VM (e.g. demo/web).")]
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    app.command(context_settings=PASS_THROUGH)(ssh)
    app.command("exec", context_settings=PASS_THROUGH)(exec_)
    app.command()(cp)
    app.command()(console)


def _vm(tt, text: str) -> dict:
    from ttcli.refs import vm_ref

    ref = vm_ref(text)
    return tt.vms.find(tt.envs.find(ref.env), ref.vm)


def _explain_missing(exc: Exception, feature: str, vm: dict) -> NoReturn:
    """An API without the endpoint at all (older server) says so in words, not a bare 404."""
    from ttclient.errors import ApiError

    if isinstance(exc, ApiError) and exc.status == 404 and exc.message == "no such API resource":
        message = f"this server offers no {feature} (its API lacks it: upgrade TT Portal)"
        raise Failure(message, data={"code": "no_endpoint", "message": message, "vm": vm["id"]}) from None
    raise exc


# --- ssh ---------------------------------------------------------------------------------------


def ssh_argv(vm: dict, server_url: str, command: list[str]) -> list[str]:
    """The system ssh's argv: the VM's forwarded port 22 as user tt. Host keys are kept in tt's
    own known_hosts under an alias per VM, because public ports are reused by later VMs."""
    from urllib.parse import urlsplit

    from ttcli.connections import GUEST_USER, ssh_target

    host, port = ssh_target(vm)
    alias = f"tt-vm-{vm['id']}.{urlsplit(server_url).hostname or 'tt'}"
    known_hosts = config.config_dir() / "known_hosts"
    argv = ["ssh", "-p", str(port), "-o", f"HostKeyAlias={alias}", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "StrictHostKeyChecking=accept-new", f"{GUEST_USER}@{host}"]
    return [*argv, "--", *command] if command else argv


def ssh(
    ctx: typer.Context,
    vm_text: VmArg,
    print_only: Annotated[bool, typer.Option("--print", help="Only print the ssh command.")] = False,
    as_json: Json = False,
):
    """SSH into a VM (user tt).

    Runs the system ssh with the VM's forwarded port 22: `tt ssh demo/web`, or
    `tt ssh demo/web -- uname -a` to run a command."""
    from ttcli.session import client

    output.json_mode(as_json)
    command = ctx.args[1:] if ctx.args[:1] == ["--"] else list(ctx.args)
    with client() as tt:
        vm = _vm(tt, vm_text)
        argv = ssh_argv(vm, tt.url, command)
    config.config_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
    if as_json or print_only:
        if as_json:
            from ttcli.connections import ssh_target

            host, port = ssh_target(vm)
            output.emit_json({"vm": vm["id"], "host": host, "port": port, "user": "tt", "argv": argv})
        else:
            import shlex

            sys.stdout.write(shlex.join(argv) + "\n")
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)  # ssh takes the terminal and the exit code from here on
    except FileNotFoundError:
        raise Failure("no ssh command on this machine (install openssh-client)") from None


# --- exec --------------------------------------------------------------------------------------


def exec_(
    ctx: typer.Context,
    vm_text: VmArg,
    timeout: Annotated[float | None, typer.Option(help="Seconds the command may run (the server's "
                                                  "default otherwise); past it: exit 3.")] = None,
    cwd: Annotated[str | None, typer.Option(help="Directory to run it in.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", metavar="NAME=VALUE",
                                                  help="Set a variable (repeatable).")] = None,
    stdin: Annotated[bool, typer.Option("--stdin", "-i", help="Send tt's stdin (read to its end) "
                                        "as the command's stdin.")] = False,
    as_json: Json = False,
):
    """Run a command in a VM (through the API).

    `tt exec demo/web -- cat /etc/os-release`: the output is streamed as it comes, and tt
    exits with the command's exit code (3 if it ran past its timeout)."""
    from ttcli.session import client

    output.json_mode(as_json)
    command = ctx.args[1:] if ctx.args[:1] == ["--"] else list(ctx.args)
    if not command:
        raise Failure("give the command after --: tt exec ENV/VM -- CMD [ARG…]", USAGE, field="command")
    variables = {}
    for item in env or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise Failure(f"{item!r}: give a variable as NAME=VALUE", USAGE, field="env")
        variables[name] = value
    data = sys.stdin.read() if stdin else None
    with client() as tt:
        vm = _vm(tt, vm_text)
        try:
            if as_json:
                result = tt.exec(vm["id"], command, stdin=data, env=variables, cwd=cwd, timeout=timeout)
                output.emit_json(result)
            else:
                result = _streamed(tt, vm["id"], command, data, variables, cwd, timeout)
        except Exception as exc:
            _explain_missing(exc, "exec", vm)
    raise typer.Exit(exit_code_of(result))


def _streamed(tt, vm_id, command, data, variables, cwd, timeout) -> dict:
    result = None
    for event in tt.exec.stream(vm_id, command, stdin=data, env=variables, cwd=cwd, timeout=timeout):
        if event.kind == "stdout":
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif event.kind == "stderr":
            sys.stderr.write(event.text)
            sys.stderr.flush()
        elif event.kind == "exit":
            result = event.result or {}
    if result is None:
        raise Failure("the command's output ended without its exit status (connection lost?)")
    for stream in ("stdout", "stderr"):
        if result.get(f"{stream}_truncated"):
            sys.stderr.write(f"tt: the command's {stream} was cut at the server's limit\n")
    if result.get("timed_out"):
        ran = result.get("duration_ms")
        sys.stderr.write(f"tt: the command ran past its timeout and was killed ({ran} ms)\n")
    return result


def exit_code_of(result: dict) -> int:
    """The command's own exit code; 3 if it timed out; 128+N if signal N killed it."""
    if result.get("timed_out"):
        return TIMEOUT
    if result.get("exit_code") is not None:
        return int(result["exit_code"])
    return 128 + int(result["signal"]) if result.get("signal") else FAILED


# --- cp ----------------------------------------------------------------------------------------


def cp(
    source: Annotated[str, typer.Argument(help="A local path ('-': stdin) or ENV/VM:/path.")],
    target: Annotated[str, typer.Argument(help="ENV/VM:/path, or a local path ('-': stdout).")],
    mode: Annotated[str | None, typer.Option(help="Octal mode of the file made in the VM "
                                             "(default: the local file's).")] = None,
    as_json: Json = False,
):
    """Copy a file into a VM or out of it.

    `tt cp app.tar demo/web:/tmp/app.tar`, `tt cp demo/web:/var/log/syslog .`"""
    from ttcli.refs import remote_path
    from ttcli.session import client

    output.json_mode(as_json)
    src, dst = remote_path(source), remote_path(target)
    if (src is None) == (dst is None):
        raise Failure("one side must be ENV/VM:/absolute/path and the other a local path", USAGE,
                      field="target")
    with client() as tt:
        if dst is not None:
            ref, path = dst
            vm = tt.vms.find(tt.envs.find(ref.env), ref.vm)
            size = _upload(tt, vm, source, path, mode)
        else:
            ref, path = src
            vm = tt.vms.find(tt.envs.find(ref.env), ref.vm)
            target, size = _download(tt, vm, path, target)
    if as_json:
        output.emit_json({"from": source, "to": target, "bytes": size})
    elif target != "-":
        output.note(f"{source} -> {target}: {size} bytes")


def _upload(tt, vm: dict, local: str, path: str, mode: str | None) -> int:
    if mode is not None:
        try:
            bits = int(mode, 8)
        except ValueError:
            raise Failure(f"{mode!r}: give the mode in octal, e.g. 0644", USAGE, field="mode") from None
    if local == "-":
        data = sys.stdin.buffer.read()
        try:
            tt.files.put(vm["id"], path, data, mode=bits if mode else None)
        except Exception as exc:
            _explain_missing(exc, "files", vm)
        return len(data)
    source = Path(local)
    try:
        info = source.stat()
        if not stat.S_ISREG(info.st_mode):
            raise Failure(f"{local}: only a regular file can be copied", USAGE, field="source")
        with source.open("rb") as handle:
            try:
                tt.files.put(vm["id"], path, handle, mode=bits if mode else stat.S_IMODE(info.st_mode))
            except Exception as exc:
                _explain_missing(exc, "files", vm)
    except OSError as exc:
        raise Failure(f"{local}: {exc.strerror}", USAGE, field="source") from None
    return info.st_size


def _download(tt, vm: dict, path: str, local: str) -> tuple[str, int]:
    if local != "-" and Path(local).is_dir():
        local = str(Path(local) / (Path(path).name or "file"))
    size = 0
    chunks = tt.files.get(vm["id"], path)
    try:
        first = next(chunks, b"")
    except Exception as exc:
        _explain_missing(exc, "files", vm)
    if local == "-":
        out = sys.stdout.buffer
        for chunk in _prepend(first, chunks):
            out.write(chunk)
            size += len(chunk)
        out.flush()
        return local, size
    partial = Path(local + ".tt-part")
    try:
        with partial.open("wb") as handle:
            for chunk in _prepend(first, chunks):
                handle.write(chunk)
                size += len(chunk)
        os.replace(partial, local)
    finally:
        partial.unlink(missing_ok=True)
    return local, size


def _prepend(first: bytes, rest):
    if first:
        yield first
    yield from rest


# --- console -----------------------------------------------------------------------------------


def console(vm_text: VmArg, as_json: Json = False):
    """A VM's console in this terminal (Ctrl-] leaves)."""
    from ttcli.session import client
    from ttcli.terminal import attach

    output.json_mode(as_json)
    with client() as tt:
        vm = _vm(tt, vm_text)
        if as_json:
            from ttclient.guest import console_url

            output.emit_json({"vm": vm["id"], "url": console_url(tt.url, vm["id"])})
            return
        try:
            connection = tt.console(vm["id"])
        except Exception as exc:
            _explain_missing(exc, "console", vm)
    sys.stderr.write(f"tt: console of {vm_text}; Ctrl-] leaves\r\n")
    with connection:
        attach(connection)
    sys.stderr.write("\r\ntt: console left\n")
