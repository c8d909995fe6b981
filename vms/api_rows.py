"""The API's VM list built from plain rows: for each VM exactly what VmSerializer gives.

A page of 50 VMs through VmSerializer made 50 Vm, Env, Node and VmTemplate instances and
100 PortMapping ones with their Node, then ran ~30 field objects per VM (attribute
lookups, None checks, each field's to_representation): three quarters of the request.
Here the page is one values() query and one for its ports, and each VM a dict literal.

VmSerializer stays the API's declaration: the schema, a single VM, what the actions
answer. tests/vms/test_api_rows.py holds both equal on VMs in every state (node down,
destroyed, no ports, UDP ports...), so a field added to one and not the other fails.
"""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.reverse import reverse

from vms.models import PortMapping, Vm

# What a row reads: the VM's columns and its Env, node and template's, no instances.
FIELDS = (
    "id", "name", "env_id", "env__name", "status", "node__name", "node__kind", "node__down_since",
    "template__name", "net_kind", "addr", "ip", "mac", "cpu_num", "mem_mb", "disk_mb", "keep_image",
    "rand_uuid", "uuid", "net_blacklist", "features", "user_data", "start_kind", "created_at",
    "destroyed_at",
)

# DRF's own field, so dates read exactly as the serializer writes them (time zone, "Z").
_DATETIME = serializers.DateTimeField()
_SENTINEL = 987654321


def _url_maker(request, format: str | None):
    """pk -> the VM's absolute URL, as HyperlinkedIdentityField writes it (with the
    request's format suffix, if any), reversed once for the page."""
    url = reverse("api:vm-detail", kwargs={"pk": _SENTINEL}, request=request, format=format)
    head, _, tail = url.partition(str(_SENTINEL))
    return lambda pk: f"{head}{pk}{tail}"


def _ports_of(vm_ids: list[int]) -> dict[int, list[dict]]:
    """Each VM's forwarded ports in PortSerializer's shape and PortMapping's order, asked
    by the page's ids (one query; the endpoint is the port's node's host)."""
    ports: dict[int, list[dict]] = {pk: [] for pk in vm_ids}
    rows = (PortMapping.objects.filter(vm_id__in=vm_ids).order_by("vm_id", "protocol", "inner_port")
            .values_list("vm_id", "protocol", "inner_port", "public_port", "node__public_host"))
    for vm_id, protocol, inner, public, host in rows:
        ports[vm_id].append({"protocol": protocol, "inner_port": inner, "public_port": public,
                             "endpoint": f"{host}:{public}"})
    return ports


def _datetime(value):
    return None if value is None else _DATETIME.to_representation(value)


def vm_list_data(rows: list[dict], request, format: str | None = None) -> list[dict]:
    """`rows` (values(*FIELDS) of one page) as VmSerializer represents each VM."""
    rows = list(rows)
    url = _url_maker(request, format)
    ports = _ports_of([row["id"] for row in rows]) if rows else {}
    data = []
    for row in rows:
        status = row["status"]
        if status != Vm.Status.DESTROYED and row["node__down_since"] is not None:
            status = Vm.UNKNOWN  # Vm.shown_status
        data.append({
            "id": row["id"], "url": url(row["id"]), "name": row["name"], "env": row["env_id"],
            "env_name": row["env__name"], "status": status, "node": row["node__name"],
            "engine": row["node__kind"], "template": row["template__name"], "net_kind": row["net_kind"],
            "addr": row["addr"], "ip": row["ip"], "mac": row["mac"], "cpu_num": row["cpu_num"],
            "mem_mb": row["mem_mb"], "disk_mb": row["disk_mb"], "keep_image": row["keep_image"],
            "rand_uuid": row["rand_uuid"], "uuid": row["uuid"], "net_blacklist": row["net_blacklist"],
            "features": row["features"], "ports": ports[row["id"]], "user_data": row["user_data"],
            "start_kind": row["start_kind"], "created_at": _datetime(row["created_at"]),
            "destroyed_at": _datetime(row["destroyed_at"]),
        })
    return data
