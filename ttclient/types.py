"""The shapes the API answers with, as TypedDicts: what each field holds, for type checkers
and for readers. They are the JSON the server sends (no conversion), so `--json` output and
the SDK's values are the same thing. Fields follow the OpenAPI schema at /api/schema/."""

from __future__ import annotations

from typing import Any, TypedDict


class Port(TypedDict):
    protocol: str  # "tcp" | "udp"
    inner_port: int
    public_port: int
    endpoint: str  # "host:port" to dial


class VmBrief(TypedDict):
    id: int
    url: str
    name: str
    status: str
    ip: str
    addr: str


class Vm(VmBrief):
    env: int
    env_name: str
    node: str
    engine: str
    template: str
    net_kind: str  # "nat" | "flat"
    mac: str
    cpu_num: int
    mem_mb: int
    disk_mb: int
    features: list[str]
    ports: list[Port]
    user_data: str
    start_kind: str
    created_at: str
    destroyed_at: str | None


class Peer(TypedDict):
    env: int
    name: str
    status: str


class Env(TypedDict):
    id: int
    url: str
    name: str
    owner: str
    status: str
    start_at: str
    end_at: str
    seconds_left: int
    is_stopped: bool
    deny_outgoing: bool
    cooldown_remaining: int
    idle_suspend: int | None  # minutes idle before it sleeps; None: never
    asleep_since: str | None
    destroyed_at: str | None
    vms: list[VmBrief]
    peers: list[Peer]


class Operation(TypedDict):
    id: int
    url: str
    kind: str
    status: str  # queued | running | succeeded | failed
    is_done: bool
    progress: int  # 0-100
    env: int | None
    vm: int | None
    snapshot: int | None
    target: str
    params: dict[str, Any]
    error_code: str
    error_message: str
    log: str
    requested_by: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None


class Snapshot(TypedDict):
    id: int
    url: str
    name: str
    vm: int
    vm_name: str
    env: int
    status: str
    life_time: int | None
    created_at: str
    expires_at: str | None


class SshKey(TypedDict):
    id: int
    name: str
    type: str
    bits: int
    fingerprint: str
    comment: str
    public_key: str


class ExecResult(TypedDict):
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: int
    timed_out: bool


class FileEntry(TypedDict, total=False):
    name: str
    kind: str  # file | dir | link | other
    size: int
    mode: int
    mtime: float | None
