"""Templates on a real node: an operator's own qcow2 image (through the pool API), and the
busybox test template built without its test shell."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from django.core.management import CommandError, call_command

from engines.libvirt import template_builder
from engines.libvirt.connection import get_connection
from envs.services import env_create
from nodes.registry import get_engine
from tests.integration import netlab
from tests.integration.conftest import public_port
from tests.support import done
from vms.models import VmTemplate
from vms.new_vms import NewVm
from vms.template_install import install_busybox_template


def make_image(path, fmt="qcow2", size="48M"):
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), size], check=True)
    return path


def test_it_registers_a_qcow2_image_as_a_template(qnode, tmp_path):
    image = make_image(tmp_path / "disk.qcow2")
    call_command("tt_register_template", "acme/disk", str(image), node=qnode.name, memo="ours")
    template = VmTemplate.objects.get(name="acme/disk")
    assert (template.size_mb, template.kernel, template.compatible_engines) == (48, "", ["libvirt"])
    pool = get_connection(qnode.uri).storagePoolLookupByName(qnode.pool_name)
    volume = pool.storageVolLookupByName(template.path)
    try:  # the bytes arrived through libvirt's upload stream
        assert volume.info()[1] == 48 * 1024 * 1024
    finally:
        volume.delete(0)


def test_it_refuses_an_image_that_is_not_qcow2(qnode, tmp_path):
    image = make_image(tmp_path / "disk.raw", fmt="raw")
    with pytest.raises(CommandError, match=r"image: .* is raw, not qcow2"):
        call_command("tt_register_template", "acme/raw", str(image), node=qnode.name)
    assert not VmTemplate.objects.filter(name="acme/raw").exists()


def test_it_names_a_missing_node(db, tmp_path):
    with pytest.raises(CommandError, match="no node named 'nowhere'"):
        call_command("tt_register_template", "acme/x", str(tmp_path / "x.qcow2"), node="nowhere")


def test_it_builds_the_test_template_without_its_shell_when_asked(
    qnode, alice, run_tasks, settings, tmp_path
):
    """TT_TEMPLATE_TEST_SHELL=0: the same guest, with no unauthenticated shell on port 23."""
    settings.TT_TEMPLATE_TEST_SHELL = False
    (tmp_path / "debs").symlink_to(template_builder.DEFAULT_CACHE / "debs")  # no second download
    template = install_busybox_template(qnode, name="tt/busybox-noshell", cache_dir=tmp_path)
    assert "telnet:23" not in template.features and "No shell" in template.memo
    with run_tasks():
        op = env_create(owner=alice, by=alice, name="noshell",
                        vms=[NewVm(name="quiet", template=template.name, mem_mb=128, ports=[80, 23])])
    vm = done(op).env.vms.get()
    netlab.wait_for_http(f"http://{qnode.public_host}:{public_port(vm, 80)}/", expect=vm.ip)
    with pytest.raises(ConnectionRefusedError):  # forwarded, but nothing listens behind it
        socket.create_connection((qnode.public_host, public_port(vm, 23)), timeout=3)
    # The serial console asks for a login, and root (locked) does not get in.
    console = get_engine(qnode).open_console(vm.to_spec())
    try:
        console.write(b"\r")
        seen = b""
        deadline = time.monotonic() + 30
        while b"login:" not in seen:
            assert time.monotonic() < deadline, f"no login prompt: {seen[-300:]!r}"
            seen += console.read(0.5)
        console.write(b"root\r")
        answered = False
        while b"incorrect" not in seen.lower():  # a password asked or not, never a shell
            assert time.monotonic() < deadline + 10, f"root got in? {seen[-300:]!r}"
            seen += console.read(0.5)
            if b"assword" in seen and not answered:
                console.write(b"\r")
                answered = True
    finally:
        console.close()
