"""Isolation per Env, and peering: both owners ask, the VMs of both Envs then reach each other.

What the node's firewall would hold is read from the test driver's in-memory
firewall (the same elements the real node's nftables tables get).
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from engines.libvirt.engine import LibvirtEngine
from envs.models import Env, Peering
from envs.peering import env_peer, env_unpeer, find_env
from envs.services import env_destroy
from operations.models import Operation
from tests.api_support import client_for
from tests.support import done
from ttportal.errors import Forbidden, IllegalState, InvalidInput
from vms.models import Vm

pytestmark = pytest.mark.usefixtures("frozen_clock")


@pytest.fixture
def alices(alice, make_env):
    return make_env(alice, name="client", vms=2)


@pytest.fixture
def bobs(bob, make_env):
    return make_env(bob, name="server", vms=1)


def reach_of(firewall, env: Env) -> dict[str, set[int]]:
    """VM name -> the Envs whose VMs may send to it, as the node's firewall says."""
    taps = {vm.to_spec().tap: vm.name for vm in env.vms.live()}
    reach: dict[str, set[int]] = {name: set() for name in taps.values()}
    for tap, allowed in firewall.reach:
        if tap in taps:
            reach[taps[tap]].add(allowed)
    return reach


def test_it_binds_each_vm_to_its_port_mac_address_and_env(alices, firewall):
    for vm in alices.vms.all():
        spec = vm.to_spec()
        assert (spec.tap, vm.mac, vm.ip) in firewall.ports
        assert firewall.tables["port_env"][(spec.tap,)] == (alices.pk,)
    assert reach_of(firewall, alices) == {"vm0": {alices.pk}, "vm1": {alices.pk}}


def test_an_ask_changes_nothing_on_the_node_until_the_other_owner_accepts(
    alice, bob, alices, bobs, firewall, run_tasks
):
    with run_tasks():
        asked = env_peer(env=alices, other=find_env("bob/server"), by=alice)
    assert (done(asked).status, asked.kind, asked.params["asked"]) == ("succeeded", "env_peer", True)
    assert Peering.objects.get().status == "pending"
    assert reach_of(firewall, bobs) == {"vm0": {bobs.pk}}
    with pytest.raises(IllegalState, match="owner of bob/server has to accept"):
        env_peer(env=alices, other=bobs, by=alice)
    with run_tasks():
        accepted = env_peer(env=bobs, other=find_env("alice/client"), by=bob)
    assert done(accepted).status == "succeeded", accepted.error_message
    assert Peering.objects.get().status == "active"
    assert reach_of(firewall, bobs) == {"vm0": {bobs.pk, alices.pk}}
    assert reach_of(firewall, alices) == {"vm0": {alices.pk, bobs.pk}, "vm1": {alices.pk, bobs.pk}}
    assert not Vm.objects.filter(net_busy=True).exists()


def test_either_owner_ends_it_and_the_envs_are_apart_again(alice, bob, alices, bobs, firewall, run_tasks):
    env_peer(env=alices, other=bobs, by=alice)
    with run_tasks():
        env_peer(env=bobs, other=alices, by=bob)
    with run_tasks():
        op = env_unpeer(env=alices, other=bobs, by=alice)
    assert done(op).status == "succeeded"
    assert reach_of(firewall, bobs) == {"vm0": {bobs.pk}}
    assert reach_of(firewall, alices) == {"vm0": {alices.pk}, "vm1": {alices.pk}}
    assert Peering.objects.get().status == "ended"
    with pytest.raises(IllegalState, match="not peered"):
        env_unpeer(env=bobs, other=alices, by=bob)


def test_one_who_may_manage_both_peers_them_at_once(alice, olga, make_env, firewall, run_tasks):
    mine, also_mine = make_env(alice, name="a"), make_env(alice, name="b")
    with run_tasks():
        op = env_peer(env=mine, other=also_mine, by=alice)
    assert done(op).status == "succeeded" and Peering.objects.get().status == "active"
    assert reach_of(firewall, mine) == {"vm0": {mine.pk, also_mine.pk}}


def test_staff_peer_two_users_envs_at_once(olga, alices, bobs, firewall, run_tasks):
    with run_tasks():
        op = env_peer(env=alices, other=bobs, by=olga)
    assert done(op).status == "succeeded"
    assert Peering.objects.get().accepted_by == olga
    assert reach_of(firewall, bobs) == {"vm0": {bobs.pk, alices.pk}}


def test_a_declined_ask_ends_without_touching_the_node(alice, bob, alices, bobs, firewall, run_tasks):
    env_peer(env=alices, other=bobs, by=alice)
    with run_tasks():
        op = env_unpeer(env=bobs, other=alices, by=bob)
    assert done(op).status == "succeeded" and op.params["asked"]
    assert Peering.objects.get().status == "ended"
    assert reach_of(firewall, bobs) == {"vm0": {bobs.pk}}


def test_an_outsider_cannot_peer_or_unpeer_someone_elses_env(alice, bob, alices, bobs, db_state):
    with pytest.raises(Forbidden):
        env_peer(env=bobs, other=alices, by=alice)
    env_peer(env=alices, other=bobs, by=alice)
    before = db_state()
    with pytest.raises(Forbidden):
        env_unpeer(env=bobs, other=alices, by=alice)
    assert db_state() == before


@pytest.mark.parametrize("ref, rule", [
    ("server", "owner/name"), ("bob/server/x", "owner/name"), (42, "owner/name"),
    ("bob/nothing", "no live Env bob/nothing"), ("nobody/server", "no live Env nobody/server"),
])
def test_it_names_the_field_of_a_bad_reference(bobs, ref, rule):
    with pytest.raises(InvalidInput, match=rule) as caught:
        find_env(ref)
    assert caught.value.field == "env"


def test_an_env_is_not_peered_with_itself(alice, alices):
    with pytest.raises(InvalidInput) as caught:
        env_peer(env=alices, other=alices, by=alice)
    assert caught.value.field == "env"


def test_a_failed_rewiring_puts_the_peering_and_the_node_back(
    alice, bob, alices, bobs, firewall, run_tasks, monkeypatch
):
    env_peer(env=alices, other=bobs, by=alice)

    def refuse(self, vm, previous):
        raise RuntimeError("nft: set full")

    monkeypatch.setattr(LibvirtEngine, "set_reach", refuse)
    with run_tasks():
        op = env_peer(env=bobs, other=alices, by=bob)
    op = done(op)
    assert (op.status, op.error_code) == ("failed", "net_set")
    assert Peering.objects.get().status == "pending"  # as it was: still asked, not active
    assert reach_of(firewall, bobs) == {"vm0": {bobs.pk}}
    assert not Vm.objects.filter(net_busy=True).exists()


def test_destroying_an_env_ends_its_peerings_and_its_peers_forget_it(
    alice, bob, olga, alices, bobs, firewall, run_tasks
):
    with run_tasks():
        env_peer(env=alices, other=bobs, by=olga)
    with run_tasks():
        op = env_destroy(env=alices, by=alice)
    assert done(op).status == "succeeded"
    assert Peering.objects.get().status == "ended"
    assert reach_of(firewall, bobs) == {"vm0": {bobs.pk}}


def test_a_vm_added_later_is_reached_by_the_peers_too(alice, olga, alices, bobs, firewall, run_tasks):
    from vms.new_vms import NewVm
    from vms.services import vm_add

    with run_tasks():
        env_peer(env=alices, other=bobs, by=olga)
    with run_tasks():
        vm_add(env=bobs, spec=NewVm(name="late", template="tt/busybox"), by=bobs.owner)
    assert reach_of(firewall, bobs)["late"] == {bobs.pk, alices.pk}


# --- the portal and the API ---------------------------------------------------------------


def test_both_env_pages_show_the_peering_and_its_buttons(client, alice, bob, alices, bobs, run_tasks):
    client.force_login(alice)
    with run_tasks():
        response = client.post(reverse("envs:peer", args=[alices.pk]), {"env": "bob/server"}, follow=True)
    assert "Peering client with bob/server" in response.content.decode()
    assert "waits for its owner" in client.get(reverse("envs:detail", args=[alices.pk])).content.decode()
    client.force_login(bob)
    page = client.get(reverse("envs:detail", args=[bobs.pk])).content.decode()
    assert "asks to peer" in page and "alice/client" in page and "Accept" in page
    with run_tasks():
        client.post(reverse("envs:peer", args=[bobs.pk]), {"env": "alice/client"})
    assert "peered" in client.get(reverse("envs:detail", args=[bobs.pk])).content.decode()
    with run_tasks():
        client.post(reverse("envs:unpeer", args=[bobs.pk, alices.pk]))
    assert Peering.objects.get().status == "ended"


def test_the_portal_says_what_is_wrong_with_a_reference(client, alice, alices):
    client.force_login(alice)
    response = client.post(reverse("envs:peer", args=[alices.pk]), {"env": "bob/nothing"}, follow=True)
    assert "no live Env bob/nothing" in response.content.decode()
    assert not Peering.objects.exists()


def test_the_api_peers_lists_and_unpeers(alice, bob, alices, bobs, run_tasks):
    with run_tasks():
        response = client_for(alice).post(f"/api/envs/{alices.pk}/peers/", {"env": "bob/server"})
    assert response.status_code == 202 and response.json()["kind"] == "env_peer"
    peers = client_for(bob).get(f"/api/envs/{bobs.pk}/").json()["peers"]
    assert peers == [{"env": alices.pk, "name": "alice/client", "status": "incoming"}]
    with run_tasks():
        client_for(bob).post(f"/api/envs/{bobs.pk}/peers/", {"env": "alice/client"})
    listed = client_for(alice).get("/api/envs/").json()["results"][0]["peers"]
    assert listed == [{"env": bobs.pk, "name": "bob/server", "status": "active"}]
    with run_tasks():
        response = client_for(bob).delete(f"/api/envs/{bobs.pk}/peers/{alices.pk}/")
    assert response.status_code == 202
    assert Operation.objects.get(kind="env_unpeer").status == "succeeded"
    missing = client_for(bob).delete(f"/api/envs/{bobs.pk}/peers/{alices.pk}/")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    bad = client_for(alice).post(f"/api/envs/{alices.pk}/peers/", {"env": "bob"})
    assert (bad.status_code, bad.json()["field"]) == (400, "env")
