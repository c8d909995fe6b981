"""The JSON Schema (draft 2020-12) of an Env file, with a description on every field.

The same schema serves `tt env validate` offline, the server's parser, the
published /api/schema/envfile.json and the docs. Its field names are the API's
(POST /api/envs/): an Env file is that body, plus `peers`, counts and `@file`s.
"""

from __future__ import annotations

import copy

from envfile import bounds as b

_PORT = {
    "description": 'An inner port to forward (NAT VMs): 80, "53/udp", or {protocol: udp, inner_port: 53}. '
    "The node picks the public port; a port listed twice counts once.",
    "oneOf": [
        {"type": "integer", "minimum": b.PORT_MIN, "maximum": b.PORT_MAX, "description": "a TCP port"},
        {"type": "string", "pattern": b.PORT_TEXT_PATTERN, "description": "a port, with /tcp or /udp"},
        {
            "type": "object",
            "properties": {
                "protocol": {"type": "string", "enum": list(b.PROTOCOLS), "default": "tcp"},
                "inner_port": {"type": "integer", "minimum": b.PORT_MIN, "maximum": b.PORT_MAX},
            },
            "required": ["inner_port"],
            "additionalProperties": False,
        },
    ],
}

_VM = {
    "type": "object",
    "description": "One VM, or several alike when its name is a count (web[1..3]).",
    "required": ["name", "template"],
    "additionalProperties": False,
    "properties": {
        "name": {
            "type": "string", "pattern": b.VM_NAME_PATTERN,
            "description": "DNS label, unique in the Env; or a count: web[1..3] makes web1, web2 and "
            "web3, web[01..10] makes web01 to web10.",
        },
        "template": {
            "type": "string", "pattern": b.PRINTABLE_PATTERN, "maxLength": b.TEMPLATE_NAME_MAX,
            "description": 'Template name, e.g. "tt/busybox" (GET /api/templates/).',
        },
        "cpu_num": {"type": "integer", "minimum": 1, "maximum": b.CPU_MAX, "default": 1,
                    "description": "vCPUs; at least the template's min_cpu."},
        "mem_mb": {"type": "integer", "minimum": 1, "maximum": b.MEM_MAX_MB, "default": 256,
                   "description": "Memory in MiB; at least the template's min_mem_mb."},
        "disk_mb": {"type": ["integer", "null"], "minimum": 1, "maximum": b.DISK_MAX_MB,
                    "description": "Disk in MiB; default and minimum: the template's size."},
        "ports": {"type": "array", "items": {"$ref": "#/$defs/port"},
                  "description": "Inner ports to forward (NAT only); at most the server's "
                  "TT_MAX_PORTS_PER_VM."},
        "net_kind": {"type": "string", "enum": list(b.NET_KINDS), "default": "nat",
                     "description": "nat: reached through ports the node forwards; flat: at the VM's "
                     "own routable address (no ports)."},
        "user_data": {
            "type": "string",
            "description": "Your own #cloud-config, run on first boot (templates with cloud-init only): "
            "inline, or @path to a file the tt command reads, relative to the Env file. "
            "The server takes it inline only.",
            "anyOf": [
                {"pattern": b.USER_DATA_PATTERN, "maxLength": b.USER_DATA_MAX},
                {"pattern": b.USER_DATA_FILE_PATTERN},
                {"const": ""},
            ],
        },
        "keep_image": {"type": "boolean", "default": False,
                       "description": "Keep the VM's disk image when it is destroyed (engines that can)."},
        "rand_uuid": {"type": "boolean", "default": True,
                      "description": "Give the VM a random machine UUID (engines that can)."},
    },
}

_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "TT Portal Env file (tt.yaml)",
    "description": "A declarative Env: what POST /api/envs/ takes, plus peers, counts (web[1..3]) and "
    "user_data from a file (@cloud-init.yaml). `tt env up -f tt.yaml` creates it; the server takes "
    "it at POST /api/envs/?format=envfile.",
    "type": "object",
    "required": ["name", "vms"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": b.NAME_PATTERN, "maxLength": b.NAME_MAX,
                 "description": "The Env's name: a DNS label, unique among your live Envs."},
        "lifetime": {
            "description": 'How long the Env lives from its creation: seconds, or "2h", "90m", "1d", '
            '"1h30m". At most the server\'s TT_MAX_ENV_LIFETIME (and your quota); default: the '
            "server's TT_DEFAULT_ENV_LIFETIME.",
            "oneOf": [
                {"type": "integer", "minimum": b.LIFETIME_MIN, "maximum": b.LIFETIME_ABS_MAX},
                {"type": "string", "pattern": b.LIFETIME_PATTERN},
            ],
        },
        "deny_outgoing": {"type": "boolean", "default": False,
                          "description": "Cut the VMs off from everything beyond the node's network."},
        "idle_suspend": {
            "type": ["integer", "null"], "minimum": b.IDLE_SUSPEND_MIN, "maximum": b.IDLE_SUSPEND_MAX,
            "description": "Sleep when idle: minutes without a new connection to its forwarded ports "
            "nor console, exec or file use, after which every VM is saved; its next connection wakes "
            "it. null: never; not given: the server's TT_IDLE_SUSPEND_DEFAULT_MIN.",
        },
        "peers": {
            "type": "array", "uniqueItems": True, "maxItems": b.PEERS_MAX,
            "items": {"type": "string", "pattern": b.PEER_PATTERN, "maxLength": b.ENV_REF_MAX},
            "description": "Envs whose VMs may reach this Env's VMs, asked once the Env is created: "
            "one of yours by name (peered at once), or another owner's as owner/name (asked; "
            "its owner accepts by peering back).",
        },
        "vms": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/vm"},
                "description": "The VMs: at least one; counts expanded, at most the server's "
                "TT_MAX_VMS_PER_ENV."},
    },
    "$defs": {"vm": _VM, "port": _PORT},
}


def schema() -> dict:
    """The JSON Schema of an Env file (a copy: callers may change it)."""
    return copy.deepcopy(_SCHEMA)


def schema_readonly() -> dict:
    """The module's own schema, for the validator (not to be changed)."""
    return _SCHEMA
