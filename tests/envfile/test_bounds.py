"""envfile's bounds are the server's: the Django-free copy may not drift from ttportal.limits."""

from __future__ import annotations

from envfile import bounds
from ttportal import limits
from vms.models import Vm
from vms.new_vms import NewVm


def test_every_mirrored_bound_equals_the_server_s():
    for name in ("NAME_MAX", "NAME_PATTERN", "NAME_RULE", "CPU_MAX", "MEM_MAX_MB", "DISK_MAX_MB", "PORT_MIN",
                 "PORT_MAX", "PORT_TEXT_PATTERN", "PROTOCOLS", "USER_DATA_MAX", "USER_DATA_PATTERN",
                 "USER_DATA_RULE", "PRINTABLE_PATTERN", "TEMPLATE_NAME_MAX", "TEMPLATE_NAME_RULE",
                 "ENV_REF_MAX", "LIFETIME_MIN", "IDLE_SUSPEND_MIN", "IDLE_SUSPEND_MAX"):
        assert getattr(bounds, name) == getattr(limits, name), name
    assert set(bounds.NET_KINDS) == set(Vm.NetKind.values)


def test_a_vm_of_the_file_has_the_fields_of_the_api_s_new_vm():
    from envfile import schema
    from vms.serializers import NewVmSerializer

    fields = set(schema()["$defs"]["vm"]["properties"])
    assert fields == set(NewVmSerializer().fields) == {f for f in NewVm.__dataclass_fields__}
