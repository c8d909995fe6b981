"""Validated requests for new VMs and port lists (shared by env_create and vm_add)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError

from engines.models import Node
from engines.registry import driver_class
from engines.specs import Feature
from ttportal.errors import Exhausted, InvalidInput, Unsupported
from ttportal.validators import NAME_RULE, validate_dns_label
from vms.models import PortMapping, Vm, VmTemplate, live_vms

PROTOCOLS = {PortMapping.Protocol.TCP, PortMapping.Protocol.UDP}


@dataclass
class NewVm:
    """What a user asks for; `template` may be a VmTemplate, its name or its id."""

    name: str
    template: object
    cpu_num: int = 1
    mem_mb: int = 256
    disk_mb: int | None = None  # default: the template's size
    ports: list = field(default_factory=list)  # [80, "22/tcp", ("udp", 53), {"protocol":..,"inner_port":..}]
    net_kind: str = Vm.NetKind.NAT
    keep_image: bool = False
    rand_uuid: bool = True


def check_name(value, field_name: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field_name, NAME_RULE)
    try:
        validate_dns_label(value)
    except ValidationError:
        raise InvalidInput(field_name, NAME_RULE) from None
    return value


def _int_in(value, field_name: str, lo: int, hi: int, rule: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(field_name, f"must be an integer between {lo} and {hi}")
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(field_name, f"must be an integer between {lo} and {hi}") from None
    if not lo <= number <= hi:
        raise InvalidInput(field_name, rule or f"must be between {lo} and {hi}")
    return number


def parse_ports(raw, field_name: str) -> list[tuple[str, int]]:
    """Accept 80, "80", "53/udp", ("udp", 53) or {"protocol": "udp", "inner_port": 53}."""
    if raw is None:
        return []
    if not isinstance(raw, list | tuple):
        raise InvalidInput(field_name, "must be a list of ports like 80 or \"53/udp\"")
    result: list[tuple[str, int]] = []
    for i, item in enumerate(raw):
        where = f"{field_name}[{i}]"
        if isinstance(item, dict):
            protocol, port = item.get("protocol", "tcp"), item.get("inner_port")
        elif isinstance(item, list | tuple) and len(item) == 2:
            protocol, port = item
        elif isinstance(item, str) and "/" in item:
            port, protocol = item.split("/", 1)
        else:
            protocol, port = "tcp", item
        protocol = str(protocol).lower()
        if protocol not in PROTOCOLS:
            raise InvalidInput(where, "protocol must be tcp or udp")
        entry = (protocol, _int_in(port, where, 1, 65535))
        if entry in result:
            raise InvalidInput(where, f"port {entry[1]}/{entry[0]} is listed twice")
        result.append(entry)
    return result


def parse_blacklist(raw, field_name: str = "net_blacklist") -> list[str]:
    if not isinstance(raw, list | tuple):
        raise InvalidInput(field_name, "must be a list of IPv4 addresses")
    result: list[str] = []
    for i, item in enumerate(raw):
        try:
            address = str(ipaddress.IPv4Address(str(item).strip()))
        except ValueError:
            raise InvalidInput(f"{field_name}[{i}]", f"{item!r} is not an IPv4 address") from None
        if address not in result:
            result.append(address)
    if len(result) > 1024:
        raise InvalidInput(field_name, "at most 1024 addresses")
    return result


def resolve_template(value, field_name: str) -> VmTemplate:
    qs = VmTemplate.objects.filter(enabled=True)
    if isinstance(value, VmTemplate):
        template = value
    elif isinstance(value, int) and not isinstance(value, bool):
        template = qs.filter(pk=value).first()
    elif isinstance(value, str) and value:
        template = qs.filter(name=value).first()
    else:
        template = None
    if template is None or not template.enabled:
        raise InvalidInput(field_name, "must name an existing, enabled template")
    return template


def wanted_features(net_kind: str, *, rand_uuid: bool, keep_image: bool) -> set[Feature]:
    wanted = {Feature.START_STOP, Feature.NAT if net_kind == Vm.NetKind.NAT else Feature.FLAT}
    if rand_uuid:
        wanted.add(Feature.RAND_UUID)
    if keep_image:
        wanted.add(Feature.KEEP_IMAGE)
    return wanted


def pick_node(
    template: VmTemplate, cpu: int, mem_mb: int, wanted: set[Feature], field_name: str,
    pending: dict[int, tuple[int, int, int]] | None = None,
) -> Node:
    """The enabled, compatible node with room and the least live VMs.

    `pending` maps node id -> (VMs, vCPUs, MiB) that earlier VMs of the same
    request will take there: they are not in the database yet, but count.
    """
    from django.db.models import Count, Sum

    live = live_vms()
    nodes = (
        Node.objects.filter(enabled=True, kind__in=template.compatible_engines or [])
        .annotate(
            live_vms=Count("vms", filter=live),
            cpu_used=Sum("vms__cpu_num", filter=live, default=0),
            mem_used=Sum("vms__mem_mb", filter=live, default=0),
        )
        .order_by("live_vms", "name")
    )
    candidates = list(nodes)
    if not candidates:
        raise InvalidInput(
            field_name,
            f"no enabled node runs an engine this template supports ({template.compatible_engines})",
        )
    capable = [n for n in candidates if not (wanted - set(driver_class(n.kind).features))]
    if not capable:
        raise Unsupported(f"no node offers the features {sorted(wanted)}", field=field_name)
    pending = pending or {}

    def load(node: Node) -> tuple[int, int, int]:
        vms, cpu_more, mem_more = pending.get(node.pk, (0, 0, 0))
        return node.live_vms + vms, node.cpu_used + cpu_more, node.mem_used + mem_more

    for node in sorted(capable, key=lambda n: (load(n)[0], n.name)):
        _, cpu_used, mem_used = load(node)
        if node.cpu_capacity and cpu_used + cpu > node.cpu_capacity:
            continue
        if node.mem_capacity_mb and mem_used + mem_mb > node.mem_capacity_mb:
            continue
        return node
    raise Exhausted("no node has enough free CPU and memory for this VM", field=field_name)


def validate_new_vm(spec: NewVm, prefix: str) -> tuple[NewVm, VmTemplate, list[tuple[str, int]]]:
    """Check every field of a new VM; errors name the field as `prefix.field`."""
    f = lambda name: f"{prefix}.{name}" if prefix else name  # noqa: E731
    name = check_name(spec.name, f("name"))
    template = resolve_template(spec.template, f("template"))
    cpu = _int_in(spec.cpu_num, f("cpu_num"), template.min_cpu, 64,
                  f"must be between {template.min_cpu} (template minimum) and 64")
    mem = _int_in(spec.mem_mb, f("mem_mb"), template.min_mem_mb, 262144,
                  f"must be between {template.min_mem_mb} MiB (template minimum) and 262144 MiB")
    disk_raw = spec.disk_mb if spec.disk_mb not in (None, "") else template.min_disk_mb
    disk = _int_in(disk_raw, f("disk_mb"), template.min_disk_mb, 4194304,
                   f"must be at least the template's size ({template.min_disk_mb} MiB) and at most 4 TiB")
    if spec.net_kind not in Vm.NetKind.values:
        raise InvalidInput(f("net_kind"), "must be nat or flat")
    ports = parse_ports(spec.ports, f("ports"))
    if spec.net_kind == Vm.NetKind.FLAT and ports:
        raise InvalidInput(f("ports"), "FLAT VMs are reached at their own address and have no port map")
    clean = NewVm(name=name, template=template, cpu_num=cpu, mem_mb=mem, disk_mb=disk, ports=ports,
                  net_kind=spec.net_kind, keep_image=bool(spec.keep_image), rand_uuid=bool(spec.rand_uuid))
    return clean, template, ports
