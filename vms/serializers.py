"""API representations of templates, VMs, ports and snapshots, and the bodies of VM actions.

Request serializers check shapes and types (and describe them in the schema);
the rules (template minimums, port ranges, names…) are the services' to check,
so every interface refuses the same things with the same messages.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from vms.models import PortMapping, Snapshot, Vm, VmTemplate
from vms.specs import NewVm

PORT_ITEM_SCHEMA = {
    "oneOf": [
        {"type": "integer", "minimum": 1, "maximum": 65535, "description": "a TCP port"},
        {"type": "string", "pattern": r"^[0-9]{1,5}(/(tcp|udp))?$", "example": "53/udp"},
        {
            "type": "object",
            "properties": {
                "protocol": {"type": "string", "enum": ["tcp", "udp"], "default": "tcp"},
                "inner_port": {"type": "integer", "minimum": 1, "maximum": 65535},
            },
            "required": ["inner_port"],
        },
    ]
}


@extend_schema_field({"type": "array", "items": PORT_ITEM_SCHEMA, "maxItems": 1024})
class PortsField(serializers.ListField):
    """Inner ports to forward: 80, "53/udp" or {"protocol": "udp", "inner_port": 53}.

    Passed to the service as given: parse_ports is the one place that reads them."""

    child = serializers.JSONField()
    max_length = 1024


class TemplateSerializer(serializers.ModelSerializer):
    # Where the image lives on a node (path, kernel…) is the operators' business.
    class Meta:
        model = VmTemplate
        fields = [
            "id", "name", "memo", "compatible_engines", "features", "size_mb", "min_cpu",
            "min_mem_mb", "enabled", "created_at",
        ]


class PortSerializer(serializers.ModelSerializer):
    endpoint = serializers.CharField(read_only=True, help_text="host:port to dial.")

    class Meta:
        model = PortMapping
        fields = ["protocol", "inner_port", "public_port", "endpoint"]


class VmSerializer(serializers.HyperlinkedModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:vm-detail")
    env = serializers.PrimaryKeyRelatedField(read_only=True)
    env_name = serializers.CharField(source="env.name", read_only=True)
    node = serializers.CharField(source="node.name", read_only=True)
    template = serializers.CharField(source="template.name", read_only=True)
    ports = PortSerializer(source="port_mappings", many=True, read_only=True)

    class Meta:
        model = Vm
        fields = [
            "id", "url", "name", "env", "env_name", "status", "node", "template", "net_kind", "addr",
            "ip", "mac", "cpu_num", "mem_mb", "disk_mb", "keep_image", "rand_uuid", "uuid",
            "net_blacklist", "features", "ports", "created_at", "destroyed_at",
        ]
        read_only_fields = fields


class VmBriefSerializer(serializers.HyperlinkedModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:vm-detail")

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


class NewVmSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="DNS label, unique among the Env's live VMs.")
    template = serializers.CharField(help_text='Template name, e.g. "tt/busybox" (see /api/templates/).')
    cpu_num = serializers.IntegerField(default=1, help_text="At least the template's min_cpu.")
    mem_mb = serializers.IntegerField(default=256, help_text="MiB; at least the template's min_mem_mb.")
    disk_mb = serializers.IntegerField(required=False, allow_null=True,
                                       help_text="MiB; default and minimum: the template's size.")
    ports = PortsField(required=False, default=list)
    net_kind = serializers.ChoiceField(choices=Vm.NetKind.choices, default=Vm.NetKind.NAT)
    keep_image = serializers.BooleanField(default=False)
    rand_uuid = serializers.BooleanField(default=True)

    def to_new_vm(self, data: dict) -> NewVm:
        return NewVm(**data)


class Blacklist(serializers.Serializer):
    addresses = serializers.ListField(
        child=serializers.CharField(), max_length=4096,
        help_text="IPv4 addresses the VM must not reach; the list replaces the current one.",
    )


class PortsChange(serializers.Serializer):
    ports = PortsField(
        help_text="The VM's forwarded inner ports, exactly (kept ones keep their public port)."
    )


class SnapshotCreate(serializers.Serializer):
    name = serializers.CharField(help_text="DNS label, unique per VM.")
    life_time = serializers.IntegerField(
        required=False, allow_null=True,
        help_text="Seconds until it is removed (60 s to 365 days); empty: kept.",
    )
