"""The driver's request schemas (engines/firecracker/schemas.py) against Firecracker's official
API contract (settings.TT_FIRECRACKER_SPEC, the OpenAPI file of Firecracker v1.16.1): the same
fields, types, enums, bounds and required lists, definition by definition, nested ones too."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from jsonschema import Draft4Validator

from engines.firecracker import schemas

# What is compared: the facts a body is checked against. Descriptions and defaults are not.
FACTS = ("type", "enum", "minimum", "maximum", "format")


def load_spec() -> dict:
    path = Path(settings.TT_FIRECRACKER_SPEC)
    if not path.is_file():
        pytest.fail(f"Firecracker's API spec is missing at {path}: the driver's contract cannot be "
                    "checked (TT_FIRECRACKER_SPEC names it)", pytrace=False)
    return _parse(str(path))


@functools.cache
def _parse(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def resolve(schema: dict, spec: dict) -> dict:
    while "$ref" in schema:
        schema = spec["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def assert_same_shape(ours: dict, theirs: dict, spec: dict, where: str) -> None:
    theirs = resolve(theirs, spec)
    for fact in FACTS:
        assert ours.get(fact) == theirs.get(fact), (
            f"{where}: {fact} is {ours.get(fact)!r}, the spec says {theirs.get(fact)!r}"
        )
    if "properties" in theirs or theirs.get("type") == "object":
        fields, required = set(theirs.get("properties", {})), sorted(theirs.get("required", []))
        assert set(ours.get("properties", {})) == fields, f"{where}: fields differ"
        assert sorted(ours.get("required", [])) == required, f"{where}: required differs"
        assert ours.get("additionalProperties") is False, f"{where}: must refuse fields the spec lacks"
        for name, field in theirs.get("properties", {}).items():
            assert_same_shape(ours["properties"][name], field, spec, f"{where}.{name}")
    if "items" in theirs:
        assert_same_shape(ours["items"], theirs["items"], spec, f"{where}[]")


def test_it_matches_the_official_definitions_field_by_field():
    spec = load_spec()
    assert spec["info"]["version"] == "1.16.1"
    for name, ours in schemas.DEFINITIONS.items():
        assert name in spec["definitions"], f"{name} is no definition of the spec"
        assert_same_shape(ours, spec["definitions"][name], spec, name)


def test_it_sends_each_call_the_body_the_spec_names_for_it():
    spec = load_spec()
    for (method, path), definition in schemas.ENDPOINTS.items():
        operation = spec["paths"][path][method.lower()]
        body = next(p for p in operation["parameters"] if p["in"] == "body")
        assert body["schema"] == {"$ref": f"#/definitions/{definition}"}, (method, path)
        assert 204 in operation["responses"] and 400 in operation["responses"], (method, path)


def test_the_comparison_catches_a_drifted_schema():
    spec = load_spec()
    drifted = copy.deepcopy(schemas.MACHINE_CONFIGURATION)
    drifted["properties"]["vcpu_count"]["maximum"] = 64
    said = r"MachineConfiguration.vcpu_count: maximum is 64, the spec says 32"
    with pytest.raises(AssertionError, match=said):
        assert_same_shape(drifted, spec["definitions"]["MachineConfiguration"], spec, "MachineConfiguration")
    missing = copy.deepcopy(schemas.SNAPSHOT_LOAD_PARAMS)
    del missing["properties"]["mem_backend"]["properties"]["backend_path"]
    with pytest.raises(AssertionError, match=r"SnapshotLoadParams.mem_backend: fields differ"):
        assert_same_shape(missing, spec["definitions"]["SnapshotLoadParams"], spec, "SnapshotLoadParams")


def test_it_fails_plainly_when_the_spec_is_missing(settings, tmp_path):
    settings.TT_FIRECRACKER_SPEC = tmp_path / "firecracker.yaml"
    with pytest.raises(pytest.fail.Exception, match=f"spec is missing at {tmp_path}/firecracker.yaml"):
        load_spec()


def official_validator(spec: dict, definition: str) -> Draft4Validator:
    """As Firecracker's tests/framework/swagger_validator.py builds one: refs resolved,
    additionalProperties false wherever the spec says nothing."""

    def strict(schema: dict) -> dict:
        schema = dict(resolve(schema, spec))
        if "properties" in schema:
            schema["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if isinstance(schema.get("items"), dict):
            schema["items"] = strict(schema["items"])
        schema.setdefault("additionalProperties", False)
        return schema

    return Draft4Validator(strict(spec["definitions"][definition]))


BUCKET = {"size": 1, "refill_time": 0}
MEMORY = {"backend_type": "File", "backend_path": "/m"}
SAMPLES = [
    ("MachineConfiguration", {"vcpu_count": 2, "mem_size_mib": 128}),
    ("MachineConfiguration", {"vcpu_count": 0, "mem_size_mib": 128}),
    ("MachineConfiguration", {"vcpu_count": 33, "mem_size_mib": 128}),
    ("MachineConfiguration", {"vcpu_count": 2}),
    ("MachineConfiguration", {"vcpu_count": 2, "mem_size_mib": "128"}),
    ("MachineConfiguration", {"vcpu_count": 2, "mem_size_mib": 128, "cpu_template": "T2"}),
    ("MachineConfiguration", {"vcpu_count": 2, "mem_size_mib": 128, "cpu_template": "T9"}),
    ("BootSource", {"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0"}),
    ("BootSource", {"boot_args": "console=ttyS0"}),
    ("BootSource", {"kernel_image_path": "/vmlinux", "kernel": "/vmlinux"}),
    ("Drive", {"drive_id": "rootfs", "is_root_device": True, "path_on_host": "/r", "is_read_only": False}),
    ("Drive", {"drive_id": "rootfs", "is_root_device": "yes"}),
    ("Drive", {"drive_id": "rootfs", "is_root_device": True, "cache_type": "Writethrough"}),
    ("Drive", {"drive_id": "d", "is_root_device": False, "rate_limiter": {"ops": BUCKET}}),
    ("Drive", {"drive_id": "d", "is_root_device": False, "rate_limiter": {"ops": {**BUCKET, "size": -1}}}),
    ("NetworkInterface", {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "52:54:00:00:00:01"}),
    ("NetworkInterface", {"iface_id": "eth0", "host_dev_name": "tap0", "mtu": 67}),
    ("NetworkInterface", {"iface_id": "eth0"}),
    ("InstanceActionInfo", {"action_type": "InstanceStart"}),
    ("InstanceActionInfo", {"action_type": "InstanceStop"}),
    ("Vm", {"state": "Paused"}),
    ("Vm", {"state": "Stopped"}),
    ("SnapshotCreateParams", {"snapshot_type": "Full", "snapshot_path": "/s", "mem_file_path": "/m"}),
    ("SnapshotCreateParams", {"snapshot_type": "Full", "snapshot_path": "/s"}),
    ("SnapshotCreateParams", {"snapshot_type": "Incremental", "snapshot_path": "/s", "mem_file_path": "/m"}),
    ("SnapshotLoadParams", {"snapshot_path": "/s", "mem_backend": MEMORY, "resume_vm": True,
                            "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap0"}]}),
    ("SnapshotLoadParams", {"snapshot_path": "/s", "mem_backend": {**MEMORY, "backend_type": "Disk"}}),
    ("SnapshotLoadParams", {"snapshot_path": "/s", "network_overrides": [{"iface_id": "eth0"}]}),
    ("SnapshotLoadParams", {"mem_file_path": "/m"}),
]


@pytest.mark.parametrize(("definition", "body"), SAMPLES)
def test_it_accepts_and_refuses_exactly_what_the_spec_does(definition, body):
    spec_says = official_validator(load_spec(), definition).is_valid(body)
    try:
        schemas.validate(definition, body)
        we_say = True
    except schemas.InvalidBody:
        we_say = False
    assert we_say == spec_says
