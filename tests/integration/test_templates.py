"""Registering an operator's own qcow2 image as a template (through the pool API)."""

from __future__ import annotations

import subprocess

import pytest
from django.core.management import CommandError, call_command

from engines.libvirt.connection import get_connection
from vms.models import VmTemplate


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
