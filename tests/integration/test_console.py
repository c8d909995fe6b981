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


def test_a_container_console_is_a_shell_in_a_tty(boot_containers):
    vm = boot_containers().vms.get()
    console = get_engine(vm.node).open_console(vm.to_spec())
    try:
        console.write(b"echo $((6*7)); tty\r")
        seen = read_until(console, b"/dev/pts/")
        assert b"42" in seen
    finally:
        console.close()
