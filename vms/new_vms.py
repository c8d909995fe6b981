"""Validated requests for new VMs (NewVm) and port lists, shared by env_create and vm_add. Not to
be confused with engines/specs.py, what a driver is given: a NewVm becomes a Vm row, and the row a VmSpec."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from engines.specs import Feature
from ttportal import limits
from ttportal.errors import ConflictingInput, InvalidInput
from ttportal.limits import NAME_RULE
from vms.models import CLOUD_INIT, Vm, VmTemplate
from vms.placement import pick_node  # noqa: F401  (placement lived here; callers import it from here)
from vms.userdata import check_user_data


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
    user_data: str = ""  # a #cloud-config, for templates with cloud-init


def check_name(value, field_name: str) -> str:
    if not limits.matches(limits.NAME_PATTERN, value):
        raise InvalidInput(field_name, NAME_RULE)
    return value


def int_in(value, field_name: str, lo: int, hi: int, unit: str = "") -> int:
    """An integer (or its decimal digits, as forms give them) between lo and hi."""
    rule = limits.between(lo, hi, unit)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidInput(field_name, rule)
    return value


def _port_item(item, where: str) -> tuple[str, int]:
    """One port as the API documents it: 80, "80", "53/udp", {"protocol": "udp", "inner_port": 53}
    (and ("udp", 53) from Python callers)."""
    rule = (f'must be a port ({limits.PORT_MIN}-{limits.PORT_MAX}), "<port>/tcp", "<port>/udp" '
            'or {"protocol": "tcp"|"udp", "inner_port": <port>}')
    if isinstance(item, dict):
        protocol, port = item.get("protocol", "tcp"), item.get("inner_port")
        if set(item) - {"protocol", "inner_port"}:
            raise InvalidInput(where, rule)
    elif isinstance(item, tuple) and len(item) == 2:
        protocol, port = item
    elif isinstance(item, str):
        if not limits.matches(limits.PORT_TEXT_PATTERN, item):
            number = item.partition("/")[0]
            if number.isascii() and number.isdigit() and limits.matches(r"[0-9]+(/(tcp|udp))?", item):
                raise InvalidInput(where, limits.between(limits.PORT_MIN, limits.PORT_MAX))
            raise InvalidInput(where, rule)
        port, _, protocol = item.partition("/")
        return protocol or "tcp", int(port)
    else:
        protocol, port = "tcp", item
    if protocol not in limits.PROTOCOLS:
        raise InvalidInput(where, "protocol must be tcp or udp")
    if isinstance(port, bool) or not isinstance(port, int):
        raise InvalidInput(where, rule)
    if not limits.PORT_MIN <= port <= limits.PORT_MAX:
        raise InvalidInput(where, limits.between(limits.PORT_MIN, limits.PORT_MAX))
    return protocol, port


def parse_ports(raw, field_name: str) -> list[tuple[str, int]]:
    """The ports to forward, each once, in the order first listed (at most TT_MAX_PORTS_PER_VM
    listed, as the API schema's maxItems says)."""
    if raw is None:
        return []
    if not isinstance(raw, list | tuple):
        raise InvalidInput(field_name, "must be a list of ports like 80 or \"53/udp\"")
    if len(raw) > limits.ports_max():
        raise InvalidInput(field_name, limits.ports_rule())
    result: list[tuple[str, int]] = []
    for i, item in enumerate(raw):
        entry = _port_item(item, f"{field_name}[{i}]")
        if entry not in result:
            result.append(entry)
    return result


def parse_blacklist(raw, field_name: str = "net_blacklist") -> list[str]:
    """IPv4 addresses, each once (at most BLACKLIST_MAX listed)."""
    if not isinstance(raw, list | tuple):
        raise InvalidInput(field_name, "must be a list of IPv4 addresses")
    if len(raw) > limits.BLACKLIST_MAX:
        raise InvalidInput(field_name, f"at most {limits.BLACKLIST_MAX} addresses")
    result: list[str] = []
    for i, item in enumerate(raw):
        item = item.strip() if isinstance(item, str) else item  # as forms split them
        if not limits.matches(limits.IPV4_PATTERN, item):
            raise InvalidInput(f"{field_name}[{i}]", f"{item!r} is not an IPv4 address")
        address = str(ipaddress.IPv4Address(item))
        if address not in result:
            result.append(address)
    return result


def resolve_template(value, field_name: str) -> VmTemplate:
    """The enabled template `value` names (a VmTemplate, its id or its name). A value no
    template name could be is malformed (InvalidInput); a well-formed name of no enabled
    template depends on what operators registered (ConflictingInput)."""
    rule = limits.TEMPLATE_NAME_RULE
    if isinstance(value, VmTemplate):
        template = value
    elif isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= limits.ID_MAX:
        template = VmTemplate.objects.filter(pk=value).first()
    elif limits.matches(limits.PRINTABLE_PATTERN, value) and len(value) <= limits.TEMPLATE_NAME_MAX:
        template = VmTemplate.objects.filter(name=value).first()
    else:
        raise InvalidInput(field_name, rule)
    if template is None or not template.enabled:
        raise ConflictingInput(field_name, rule)
    return template


def wanted_features(net_kind: str, *, rand_uuid: bool, keep_image: bool, disk_mb: int | None,
                    template: VmTemplate) -> set[Feature]:
    """What the engine of a new VM must offer. `disk_mb`: the disk asked for (None: the
    template's size); one larger than the template's needs an engine that sets a disk's
    size (DISK_LIMIT), and the template's own size is what every engine gives."""
    wanted = {Feature.START_STOP, Feature.NAT if net_kind == Vm.NetKind.NAT else Feature.FLAT}
    if rand_uuid:
        wanted.add(Feature.RAND_UUID)
    if keep_image:
        wanted.add(Feature.KEEP_IMAGE)
    if disk_mb is not None and disk_mb > template.min_disk_mb:
        wanted.add(Feature.DISK_LIMIT)
    return wanted


def _at_least(value: int, field_name: str, minimum: int, rule: str) -> int:
    """Within the absolute bounds (checked before) but below what the template needs: a rule
    that depends on the template named, so it is a ConflictingInput (422 in the API)."""
    if value < minimum:
        raise ConflictingInput(field_name, rule)
    return value


def validate_new_vm(spec: NewVm, prefix: str) -> tuple[NewVm, VmTemplate, list[tuple[str, int]]]:
    """Check every field of a new VM; errors name the field as `prefix.field`."""
    f = lambda name: f"{prefix}.{name}" if prefix else name  # noqa: E731
    name = check_name(spec.name, f("name"))
    cpu = int_in(spec.cpu_num, f("cpu_num"), 1, limits.CPU_MAX)
    mem = int_in(spec.mem_mb, f("mem_mb"), 1, limits.MEM_MAX_MB, "MiB")
    disk = None
    if spec.disk_mb not in (None, ""):
        disk = int_in(spec.disk_mb, f("disk_mb"), 1, limits.DISK_MAX_MB, "MiB")
    if spec.net_kind not in Vm.NetKind.values:
        raise InvalidInput(f("net_kind"), "must be nat or flat")
    ports = parse_ports(spec.ports, f("ports"))
    user_data = check_user_data(spec.user_data, f("user_data"))
    if spec.net_kind == Vm.NetKind.FLAT and ports:
        # A rule across two fields, which a schema could state only by splitting NewVm
        # into variants that generated clients then make hard to use: refused like the
        # data-dependent rules (as vm_set_ports refuses ports for a FLAT VM).
        raise ConflictingInput(f("ports"), "FLAT VMs are reached at their own address and have no port map")
    # Then the rules that depend on the template named.
    template = resolve_template(spec.template, f("template"))
    _at_least(cpu, f("cpu_num"), template.min_cpu, f"must be at least {template.min_cpu} (template minimum)")
    _at_least(mem, f("mem_mb"), template.min_mem_mb,
              f"must be at least {template.min_mem_mb} MiB (template minimum)")
    if disk is None:
        disk = template.min_disk_mb
    _at_least(disk, f("disk_mb"), template.min_disk_mb,
              f"must be at least the template's size ({template.min_disk_mb} MiB)")
    if user_data and CLOUD_INIT not in (template.features or []):
        raise ConflictingInput(f("user_data"), f"template {template.name} does not run cloud-init")
    clean = NewVm(name=name, template=template, cpu_num=cpu, mem_mb=mem, disk_mb=disk, ports=ports,
                  net_kind=spec.net_kind, keep_image=bool(spec.keep_image), rand_uuid=bool(spec.rand_uuid),
                  user_data=user_data)
    return clean, template, ports
