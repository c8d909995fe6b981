"""The request bodies this driver sends, as the project's own JSON schemas.

Each schema is a definition of Firecracker's API contract (the OpenAPI file
`firecracker-v1.16.1.yaml`, `definitions:`), written out here: field names, types,
enums, bounds and required lists are facts of that contract, and
tests/engines/firecracker/test_contract.py checks them against the official file,
field by field, both ways. Nested `$ref`s are written inline.

Every body is validated before it is sent (`validate`), with
`additionalProperties: false` as Firecracker's own test framework does: a body the
contract refuses never leaves the driver.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft4Validator

Schema = dict[str, Any]


def _string(*enum: str) -> Schema:
    return {"type": "string", "enum": list(enum)} if enum else {"type": "string"}


def _integer(*, minimum: int | None = None, maximum: int | None = None, fmt: str = "") -> Schema:
    schema: Schema = {"type": "integer"}
    if fmt:
        schema["format"] = fmt
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


BOOLEAN: Schema = {"type": "boolean"}
STRING: Schema = _string()


def _object(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:  # JSON Schema draft 4 wants a non-empty list, or none at all
        schema["required"] = list(required)
    return schema


TOKEN_BUCKET = _object(
    {
        "one_time_burst": _integer(minimum=0, fmt="int64"),
        "refill_time": _integer(minimum=0, fmt="int64"),
        "size": _integer(minimum=0, fmt="int64"),
    },
    required=("refill_time", "size"),
)

RATE_LIMITER = _object({"bandwidth": TOKEN_BUCKET, "ops": TOKEN_BUCKET})

CPU_TEMPLATE = _string("C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None")

BOOT_SOURCE = _object(
    {"boot_args": STRING, "initrd_path": STRING, "kernel_image_path": STRING},
    required=("kernel_image_path",),
)

DRIVE = _object(
    {
        "drive_id": STRING,
        "partuuid": STRING,
        "is_root_device": BOOLEAN,
        "cache_type": _string("Unsafe", "Writeback"),
        "is_read_only": BOOLEAN,
        "path_on_host": STRING,
        "rate_limiter": RATE_LIMITER,
        "io_engine": _string("Sync", "Async"),
        "socket": STRING,
    },
    required=("drive_id", "is_root_device"),
)

MACHINE_CONFIGURATION = _object(
    {
        "cpu_template": CPU_TEMPLATE,
        "smt": BOOLEAN,
        "mem_size_mib": _integer(),
        "track_dirty_pages": BOOLEAN,
        "vcpu_count": _integer(minimum=1, maximum=32),
        "huge_pages": _string("None", "2M"),
    },
    required=("mem_size_mib", "vcpu_count"),
)

NETWORK_INTERFACE = _object(
    {
        "guest_mac": STRING,
        "host_dev_name": STRING,
        "iface_id": STRING,
        "mtu": _integer(minimum=68, maximum=65535),
        "rx_rate_limiter": RATE_LIMITER,
        "tx_rate_limiter": RATE_LIMITER,
    },
    required=("host_dev_name", "iface_id"),
)

INSTANCE_ACTION_INFO = _object(
    {"action_type": _string("FlushMetrics", "InstanceStart", "SendCtrlAltDel")},
    required=("action_type",),
)

VM = _object({"state": _string("Paused", "Resumed")}, required=("state",))

SNAPSHOT_CREATE_PARAMS = _object(
    {"mem_file_path": STRING, "snapshot_path": STRING, "snapshot_type": _string("Full", "Diff")},
    required=("mem_file_path", "snapshot_path"),
)

MEMORY_BACKEND = _object(
    {"backend_type": _string("File", "Uffd"), "backend_path": STRING},
    required=("backend_type", "backend_path"),
)

NETWORK_OVERRIDE = _object(
    {"iface_id": STRING, "host_dev_name": STRING}, required=("iface_id", "host_dev_name"),
)

VSOCK_OVERRIDE = _object({"uds_path": STRING}, required=("uds_path",))

SNAPSHOT_LOAD_PARAMS = _object(
    {
        "enable_diff_snapshots": BOOLEAN,
        "track_dirty_pages": BOOLEAN,
        "mem_file_path": STRING,
        "mem_backend": MEMORY_BACKEND,
        "snapshot_path": STRING,
        "resume_vm": BOOLEAN,
        "network_overrides": {"type": "array", "items": NETWORK_OVERRIDE},
        "vsock_override": VSOCK_OVERRIDE,
        "clock_realtime": BOOLEAN,
    },
    required=("snapshot_path",),
)

# The contract's definition names, as the contract test looks them up.
DEFINITIONS: dict[str, Schema] = {
    "BootSource": BOOT_SOURCE,
    "Drive": DRIVE,
    "MachineConfiguration": MACHINE_CONFIGURATION,
    "NetworkInterface": NETWORK_INTERFACE,
    "InstanceActionInfo": INSTANCE_ACTION_INFO,
    "Vm": VM,
    "SnapshotCreateParams": SNAPSHOT_CREATE_PARAMS,
    "SnapshotLoadParams": SNAPSHOT_LOAD_PARAMS,
    "MemoryBackend": MEMORY_BACKEND,
    "NetworkOverride": NETWORK_OVERRIDE,
    "VsockOverride": VSOCK_OVERRIDE,
    "RateLimiter": RATE_LIMITER,
    "TokenBucket": TOKEN_BUCKET,
    "CpuTemplate": CPU_TEMPLATE,
}

# Every call the driver makes with a body: (method, path template) -> the definition
# its body must match (the contract's `in: body` parameter of that operation).
ENDPOINTS: dict[tuple[str, str], str] = {
    ("PUT", "/boot-source"): "BootSource",
    ("PUT", "/drives/{drive_id}"): "Drive",
    ("PUT", "/machine-config"): "MachineConfiguration",
    ("PUT", "/network-interfaces/{iface_id}"): "NetworkInterface",
    ("PUT", "/actions"): "InstanceActionInfo",
    ("PATCH", "/vm"): "Vm",
    ("PUT", "/snapshot/create"): "SnapshotCreateParams",
    ("PUT", "/snapshot/load"): "SnapshotLoadParams",
}

_validators = {name: Draft4Validator(schema) for name, schema in DEFINITIONS.items()}


class InvalidBody(ValueError):
    """A body the contract would refuse: a bug in the driver or a VM Firecracker cannot run."""


def validate(definition: str, body: dict) -> dict:
    """`body` unchanged when it matches `definition`; InvalidBody naming every fault otherwise."""
    faults = sorted(_validators[definition].iter_errors(body), key=lambda e: list(e.absolute_path))
    if faults:
        described = "; ".join(f"{_where(fault.absolute_path)}: {fault.message}" for fault in faults)
        raise InvalidBody(f"{definition} refused before sending: {described}")
    return body


def _where(path) -> str:
    return ".".join(str(part) for part in path) or "(body)"


def body_for(method: str, path_template: str, body: dict) -> dict:
    """The body of one call, validated against the definition the contract names for it."""
    try:
        definition = ENDPOINTS[(method, path_template)]
    except KeyError:
        raise InvalidBody(f"{method} {path_template} is not a call this driver makes") from None
    return validate(definition, body)
