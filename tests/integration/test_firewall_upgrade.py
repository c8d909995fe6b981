"""A node's tables made by an older version (sets without per-VM counters) are brought up
to date by the next preparation, and the rebuild that follows puts every element back."""

from __future__ import annotations

import pytest

from engines.network.nftables import NftablesFirewall, nft
from engines.specs import TemplateSpec, VmSpec

TABLE = "tt_upgrade_test"


@pytest.fixture
def firewall():
    fw = NftablesFirewall(vm_network="10.109.0.0/16", bridge="ttbr-upg", table=TABLE, port_prefix="tupgrade")
    fw.drop_table()
    yield fw
    fw.drop_table()


def test_sets_without_counters_are_made_again_and_refilled(firewall):
    # As the version before per-VM counters left them: referenced by a rule, holding elements.
    nft(f"""
add table ip {TABLE}
add set ip {TABLE} denied {{ type ipv4_addr; }}
add set ip {TABLE} blacklist {{ type ipv4_addr . ipv4_addr; }}
add chain ip {TABLE} forward {{ type filter hook forward priority 0; policy accept; }}
add rule ip {TABLE} forward ip saddr @denied drop
add element ip {TABLE} denied {{ 10.109.0.5 }}
add element ip {TABLE} blacklist {{ 10.109.0.5 . 198.51.100.7 }}
""")
    firewall.ensure()
    vm = VmSpec(id=5, name="tt-upg-5", template=TemplateSpec(name="t", path="t"), cpu_num=1, mem_mb=64,
                disk_mb=64, mac="52:54:00:00:00:05", ip="10.109.0.5", deny_outgoing=True,
                blacklist=("198.51.100.7",), env_id=1)
    firewall.rebuild([vm])

    assert firewall.drops_per_vm() == {"10.109.0.5": {"egress_denied": 0, "blacklisted": 0}}
    assert {e.table for e in firewall.installed({vm.ip})} >= {"denied", "blacklist"}
    firewall.ensure()  # up to date now: nothing is made again, the elements stay
    assert firewall.drops_per_vm() == {"10.109.0.5": {"egress_denied": 0, "blacklisted": 0}}
