"""The NoCloud seed: what cloud-init will read, and the CIDATA disk it finds it on."""

from __future__ import annotations

import subprocess

import yaml

from engines.cloudinit import CloudInitSpec, seed_files, write_seed

KEYS = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQ alice@laptop", "ssh-rsa AAAAB3NzaC1yc2E bob")


def test_meta_data_names_the_instance_the_host_and_the_keys():
    files = seed_files(CloudInitSpec(hostname="web", instance_id="tt-n-7-1700000000", ssh_keys=KEYS))
    assert yaml.safe_load(files["meta-data"]) == {
        "instance-id": "tt-n-7-1700000000", "local-hostname": "web", "public-keys": list(KEYS),
    }


def test_user_data_is_the_owners_own_or_an_empty_cloud_config():
    given = "#cloud-config\npackages: [curl]\n"
    assert seed_files(CloudInitSpec("web", "i", user_data=given))["user-data"] == given.encode()
    empty = seed_files(CloudInitSpec("web", "i"))["user-data"].decode()
    assert empty.startswith("#cloud-config\n") and yaml.safe_load(empty) == {}


def test_a_value_cannot_break_out_of_its_field():
    # A comment with a newline and YAML in it stays one key in the list.
    key = "ssh-ed25519 AAAA x\ninstance-id: stolen"
    meta = yaml.safe_load(seed_files(CloudInitSpec("web", "real", ssh_keys=(key,)))["meta-data"])
    assert meta["instance-id"] == "real" and meta["public-keys"] == [key]


def test_the_seed_is_a_vfat_disk_labelled_cidata_holding_both_files(tmp_path):
    spec = CloudInitSpec(hostname="web", instance_id="i-1", ssh_keys=KEYS, user_data="#cloud-config\n{}\n")
    image = write_seed(spec, tmp_path / "seed.img")
    label = subprocess.run(["mlabel", "-s", "-i", str(image), "::"], capture_output=True, text=True,
                           check=True)
    assert "CIDATA" in label.stdout
    for name, content in seed_files(spec).items():
        read = subprocess.run(["mtype", "-i", str(image), f"::{name}"], capture_output=True, check=True)
        assert read.stdout == content
