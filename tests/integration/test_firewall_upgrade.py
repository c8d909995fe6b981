"""A node's tables made by an older version (sets without per-VM counters) are brought up
to date by the next preparation, and the rebuild that follows puts every element back."""

from __future__ import annotations

import pytest

from engines.network.nftables import NftablesFirewall, nft
from engines.specs import TemplateSpec, VmSpec

TABLE = "tt_upgrade_test"
NOTHING_DROPPED = {"egress_denied": 0, "blacklisted": 0, "private_network": 0}


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

    assert firewall.drops_per_vm() == {"10.109.0.5": NOTHING_DROPPED}
    assert {e.table for e in firewall.installed({vm.ip})} >= {"denied", "blacklist"}
    firewall.ensure()  # up to date now: nothing is made again, the elements stay
    assert firewall.drops_per_vm() == {"10.109.0.5": NOTHING_DROPPED}


def test_a_table_of_the_version_before_the_egress_boundary_is_brought_up_to_date(firewall):
    # As that version left them: no private-network sets or rules, no ip6 table, DHCP checked
    # by frame only; a VM's elements in place.
    nft(f"""
add table ip {TABLE}
add set ip {TABLE} denied {{ type ipv4_addr; counter; }}
add set ip {TABLE} blacklist {{ type ipv4_addr . ipv4_addr; counter; }}
add chain ip {TABLE} forward {{ type filter hook forward priority 0; policy accept; }}
add rule ip {TABLE} forward ip saddr . ip daddr @blacklist counter drop comment "blacklisted"
add rule ip {TABLE} forward ct state established,related accept
add rule ip {TABLE} forward ip daddr != 10.109.0.0/16 ip saddr @denied counter drop comment "egress denied"
add element ip {TABLE} denied {{ 10.109.0.5 }}
add table bridge {TABLE}
add set bridge {TABLE} port_macs {{ type ifname . ether_addr; }}
add chain bridge {TABLE} prerouting {{ type filter hook prerouting priority -200; policy accept; }}
add rule bridge {TABLE} prerouting ether type ip ip saddr 0.0.0.0 udp sport 68 udp dport 67 \
    iifname . ether saddr @port_macs accept
add element bridge {TABLE} port_macs {{ "tupgrade0001" . 52:54:00:00:00:05 }}
""")
    firewall.ensure()
    listing = firewall.listing()
    assert listing["denied"] and listing["port_macs"]  # kept until the rebuild
    counters = firewall.counters()
    for rule in ("ip: private network", "ip6: private network", "ip: DNS of a VM denied outgoing",
                 "bridge: DHCP for another MAC", "bridge: DHCP server on a VM port"):
        assert rule in counters, rule
    assert {"10.0.0.0/8", "169.254.0.0/16"} <= {e["prefix"]["addr"] + "/" + str(e["prefix"]["len"])
                                               for e in listing["private_nets"] if isinstance(e, dict)
                                               and "prefix" in e}
    vm = VmSpec(id=5, name="tt-upg-5", template=TemplateSpec(name="t", path="t"), cpu_num=1, mem_mb=64,
                disk_mb=64, mac="52:54:00:00:00:05", ip="10.109.0.5", deny_outgoing=True, env_id=1)
    firewall.rebuild([vm])
    assert firewall.drops_per_vm() == {"10.109.0.5": NOTHING_DROPPED}
    assert {e.table for e in firewall.installed({vm.ip, vm.tap})} >= {"vm_addrs", "port_chaddr"}
    rules = firewall.rules()
    firewall.ensure()
    assert firewall.rules() == rules
