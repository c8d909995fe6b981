"""envfile's bounds are the server's: ttportal.limits takes them from envfile.bounds, and the
VM fields and network kinds a file may name are the API's."""

from __future__ import annotations

from envfile import bounds
from vms.models import Vm
from vms.new_vms import NewVm


def test_the_network_kinds_a_file_may_name_are_the_vm_s():
    assert set(bounds.NET_KINDS) == set(Vm.NetKind.values)


def test_a_vm_of_the_file_has_the_fields_of_the_api_s_new_vm():
    from envfile import schema
    from vms.serializers import NewVmSerializer

    fields = set(schema()["$defs"]["vm"]["properties"])
    assert fields == set(NewVmSerializer().fields) == {f for f in NewVm.__dataclass_fields__}
