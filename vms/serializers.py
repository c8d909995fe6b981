"""API representations of templates, VMs, ports and snapshots, and the bodies of VM actions.

Request serializers check shapes and types (and describe them in the schema);
the rules (template minimums, port ranges, names…) are the services' to check,
so every interface refuses the same things with the same messages.
"""

from __future__ import annotations

import copy

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from rest_framework import serializers

from nodes.models import EngineKind
from ttportal import limits
from ttportal.api_fields import Boolean, Integer, Name, StrictSerializer, Text
from vms.models import PortMapping, Snapshot, Vm, VmTemplate

PORT_ITEM_SCHEMA = {
    "oneOf": [
        {"type": "integer", "minimum": limits.PORT_MIN, "maximum": limits.PORT_MAX,
         "description": "a TCP port"},
        {"type": "string", "pattern": limits.PORT_TEXT_PATTERN, "example": "53/udp",
         "description": "a port, with /tcp or /udp"},
        {
            "type": "object",
            "properties": {
                "protocol": {"type": "string", "enum": list(limits.PROTOCOLS), "default": "tcp"},
                "inner_port": {"type": "integer", "minimum": limits.PORT_MIN, "maximum": limits.PORT_MAX},
            },
            "required": ["inner_port"],
            "additionalProperties": False,
        },
    ]
}


class PortsField(serializers.ListField):
    """Inner ports to forward: 80, "53/udp" or {"protocol": "udp", "inner_port": 53}; a port
    listed twice counts once. At most TT_MAX_PORTS_PER_VM.

    Items are passed to the service as given: parse_ports is the one place that reads them.
    The bound is a setting, read whenever a serializer is made (DRF makes its fields anew
    per instance), so the schema and the check say what the deployment takes."""

    child = serializers.JSONField()

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", limits.ports_max())
        kwargs.setdefault("error_messages", {"max_length": limits.ports_rule()})
        super().__init__(**kwargs)


class PortsFieldSchema(OpenApiSerializerFieldExtension):
    """The ports list as the schema states it, its maxItems this field's own (a setting)."""

    target_class = PortsField

    def map_serializer_field(self, auto_schema, direction):
        return {"type": "array", "items": copy.deepcopy(PORT_ITEM_SCHEMA), "maxItems": self.target.max_length}


class TemplateSerializer(serializers.ModelSerializer):
    default_ports = serializers.ListField(
        child=serializers.CharField(), read_only=True,
        help_text='The ports a VM of it usually forwards, as `ports` takes them ("22", "53/udp").',
    )
    # Annotated by VmTemplate.objects.with_runnable() (TemplateViewSet.get_queryset).
    runnable = serializers.BooleanField(
        read_only=True, help_text="A VM can be made from it now: it is enabled and an enabled node runs one "
        "of its engines (only staff see templates where this is false).",
    )

    # Where the image lives on a node (path, kernel…) is the operators' business.
    class Meta:
        model = VmTemplate
        fields = [
            "id", "name", "memo", "compatible_engines", "features", "default_ports", "size_mb", "min_cpu",
            "min_mem_mb", "enabled", "runnable", "created_at",
        ]


class PortSerializer(serializers.ModelSerializer):
    endpoint = serializers.CharField(read_only=True, help_text="host:port to dial.")

    class Meta:
        model = PortMapping
        fields = ["protocol", "inner_port", "public_port", "endpoint"]


# A VM's status as clients see it: `unknown` while its node is down.
SHOWN_STATUSES = [*Vm.Status.choices, (Vm.UNKNOWN, "Unknown: its node is down")]


def shown_status_field() -> serializers.ChoiceField:
    return serializers.ChoiceField(
        source="shown_status", choices=SHOWN_STATUSES, read_only=True,
        help_text="unknown while the VM's node is down (its task cluster stopped beating): "
        "the VM is kept, and shows its real status once the node beats again.",
    )


class VmSerializer(serializers.HyperlinkedModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:vm-detail")
    status = shown_status_field()
    env = serializers.PrimaryKeyRelatedField(read_only=True)
    env_name = serializers.CharField(source="env.name", read_only=True)
    node = serializers.CharField(source="node.name", read_only=True)
    engine = serializers.ChoiceField(
        source="node.kind", choices=EngineKind.choices, read_only=True,
        help_text="The engine that runs it: its node's kind.",
    )
    template = serializers.CharField(source="template.name", read_only=True)
    ports = PortSerializer(source="port_mappings", many=True, read_only=True)
    start_kind = serializers.ChoiceField(
        choices=Vm.StartKind.choices, read_only=True,
        help_text="How it was started: cold (booted from its template) or warm (a spare of its node's "
        "warm pool, booted ahead and restored from its saved memory).",
    )

    class Meta:
        model = Vm
        fields = [
            "id", "url", "name", "env", "env_name", "status", "node", "engine", "template", "net_kind",
            "addr", "ip", "mac", "cpu_num", "mem_mb", "disk_mb", "keep_image", "rand_uuid", "uuid",
            "net_blacklist", "features", "ports", "user_data", "start_kind", "created_at", "destroyed_at",
        ]
        read_only_fields = fields


class VmBriefSerializer(serializers.HyperlinkedModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:vm-detail")
    status = shown_status_field()

    class Meta:
        model = Vm
        fields = ["id", "url", "name", "status", "ip", "addr"]
        read_only_fields = fields


class SnapshotSerializer(serializers.HyperlinkedModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:snapshot-detail")
    vm = serializers.PrimaryKeyRelatedField(read_only=True)
    vm_name = serializers.CharField(source="vm.name", read_only=True)
    env = serializers.IntegerField(source="vm.env_id", read_only=True)

    class Meta:
        model = Snapshot
        fields = ["id", "url", "name", "vm", "vm_name", "env", "status", "life_time", "created_at",
                  "expires_at", "meta"]
        read_only_fields = fields


# --- request bodies -------------------------------------------------------------------


class NewVmSerializer(StrictSerializer):
    name = Name(help_text="DNS label, unique among the Env's live VMs.")
    template = Text(rule=limits.TEMPLATE_NAME_RULE, pattern=limits.PRINTABLE_PATTERN,
                    max_length=limits.TEMPLATE_NAME_MAX,
                    help_text='Template name, e.g. "tt/busybox" (see /api/templates/).')
    cpu_num = Integer(min_value=1, max_value=limits.CPU_MAX, default=1,
                      help_text="At least the template's min_cpu.")
    mem_mb = Integer(min_value=1, max_value=limits.MEM_MAX_MB, unit="MiB", default=256,
                     help_text="MiB; at least the template's min_mem_mb.")
    disk_mb = Integer(min_value=1, max_value=limits.DISK_MAX_MB, unit="MiB", required=False, allow_null=True,
                      help_text="MiB; default and minimum: the template's size.")
    ports = PortsField(required=False, default=list)
    net_kind = serializers.ChoiceField(choices=Vm.NetKind.choices, default=Vm.NetKind.NAT)
    keep_image = Boolean(default=False)
    rand_uuid = Boolean(default=True)
    user_data = Text(
        rule=limits.USER_DATA_RULE, pattern=limits.USER_DATA_PATTERN, max_length=limits.USER_DATA_MAX,
        required=False, allow_blank=True, default="",
        help_text="Your own #cloud-config, run on the VM's first boot (templates with the cloud-init "
        "feature only). Checked as YAML: a document that does not parse is refused, naming the line.",
    )


class Blacklist(StrictSerializer):
    addresses = serializers.ListField(
        child=Text(rule="must be an IPv4 address", pattern=limits.IPV4_PATTERN),
        max_length=limits.BLACKLIST_MAX,
        error_messages={"max_length": f"at most {limits.BLACKLIST_MAX} addresses"},
        help_text="IPv4 addresses the VM must not reach; the list replaces the current one "
        "(an address listed twice counts once).",
    )


class PortsChange(StrictSerializer):
    ports = PortsField(
        help_text="The VM's forwarded inner ports, exactly (kept ones keep their public port)."
    )


class SnapshotCreate(StrictSerializer):
    name = Name(help_text="DNS label, unique per VM.")
    life_time = Integer(
        min_value=limits.SNAPSHOT_LIFE_MIN, max_value=limits.SNAPSHOT_LIFE_MAX, unit="seconds",
        required=False, allow_null=True, help_text="Seconds until it is removed (60 s to 365 days); "
        "null or absent: kept until destroyed.",
    )
