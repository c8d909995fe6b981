"""The engines' live consoles against real guests: a busybox VM's serial console through
libvirt's console stream, a container's tty through podman's exec; and the busybox
template without its test shell asking for a login there."""

from __future__ import annotations

import time

import pytest

from engines.errors import EngineError
from nodes.registry import get_engine

pytestmark = pytest.mark.integration


def read_until(stream, wanted: bytes, timeout: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        assert time.monotonic() < deadline, f"no {wanted!r} within {timeout} s; saw {seen[-500:]!r}"
        seen += stream.read(0.5)
    return seen


def test_a_busybox_vm_console_runs_what_is_typed_and_is_one_per_vm(boot_env):
    vm = boot_env().vms.get()
    engine = get_engine(vm.node)
    console = engine.open_console(vm.to_spec())
    try:
        console.write(b"echo $((6*7))\r")
        assert b"42" in read_until(console, b"\r\n42\r\n")
        # libvirt allows one console stream per domain: the portal shares it (vms/console.py)
        with pytest.raises(EngineError, match="open elsewhere"):
            engine.open_console(vm.to_spec())
    finally:
        console.close()
    again = engine.open_console(vm.to_spec())  # let go: it opens again
    again.close()
    # The same running VM has no exec and no files: its template has no agent (issue 25).
    from ttportal.errors import Unsupported
    from vms.guest_access import vm_exec, vm_file_list

    with pytest.raises(Unsupported, match="lacks the feature exec"):
        vm_exec(vm, by=vm.env.owner, command=["true"])
    with pytest.raises(Unsupported, match="lacks the feature files"):
        vm_file_list(vm, by=vm.env.owner, path="/")


def test_a_container_console_is_a_shell_in_a_tty(boot_containers):
    vm = boot_containers().vms.get()
    console = get_engine(vm.node).open_console(vm.to_spec())
    try:
        console.write(b"echo $((6*7)); tty\r")
        seen = read_until(console, b"/dev/pts/")
        assert b"42" in seen
    finally:
        console.close()


@pytest.fixture
def debian(qnode, debian_image):
    from vms.template_install import install_debian_template

    if debian_image is not None:
        debian_image.result()  # being built beside the earlier tests (conftest.py)
    return install_debian_template(qnode)  # built here otherwise (cached after)


def test_a_debian_vm_console_lets_tt_in_with_the_password_its_user_data_set(
    qnode, debian, alice, run_tasks
):
    """docs/guide/console.md's recipe: a password for `tt` through #cloud-config chpasswd
    (a hash), then a login on the serial console."""
    import subprocess

    from envs.services import env_create
    from tests.integration.test_debian import debian_vm
    from tests.support import done

    password = "console-pass-4711"
    hashed = subprocess.run(["openssl", "passwd", "-6", password], capture_output=True, text=True,
                            check=True).stdout.strip()
    user_data = ("#cloud-config\nchpasswd:\n  expire: false\n  users:\n"
                 f"    - name: tt\n      type: hash\n      password: \"{hashed}\"\n")
    with run_tasks():
        op = env_create(owner=alice, by=alice, name="console-debian",
                        vms=[debian_vm("con", user_data=user_data)])
    vm = done(op).env.vms.get()
    console = get_engine(vm.node).open_console(vm.to_spec())
    try:
        read_until(console, b"finished at", timeout=400)  # cloud-init's last word: the password is set
        console.write(b"\r")
        read_until(console, b"login:")
        console.write(b"tt\r")
        read_until(console, b"Password:")
        console.write(password.encode() + b"\r")
        read_until(console, b"$ ")
        console.write(b"echo $((6*7))\r")
        read_until(console, b"42\r\n")  # bash wraps it in bracketed-paste switches: \x1b[?2004l\r42
    finally:
        console.close()
