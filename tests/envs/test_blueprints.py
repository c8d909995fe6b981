"""Blueprints through their services (envs/blueprints.py): who sees one, who may change it,
what a launch makes, and the bounds on what is saved."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from envs import blueprints
from envs.envfiles import EnvFileInvalid
from envs.models import Blueprint, Env
from tests.conftest import make_staff, make_user
from ttportal.errors import ConflictingInput, Forbidden, InvalidInput, QuotaExceeded

FILE = """\
name: ci
lifetime: 2h
vms:
  - name: web[1..2]
    template: tt/busybox
    mem_mb: 128
    ports: [80]
"""


def save(user, name="ci-bp", text=FILE, **extra) -> Blueprint:
    return blueprints.blueprint_save(by=user, name=name, text=text, **extra)


def visible(user) -> set[str]:
    return set(Blueprint.objects.visible_to(user).values_list("name", flat=True))


def test_a_saved_blueprint_keeps_its_file_and_the_name_it_gives_the_env(alice):
    bp = save(alice, description="two web servers")
    assert (bp.owner, bp.name, bp.description, bp.text, bp.env_name) == (
        alice, "ci-bp", "two web servers", FILE, "ci")


def test_a_name_defaults_to_the_files(alice):
    assert blueprints.blueprint_save(by=alice, text=FILE).name == "ci"


def test_each_user_sees_their_own_what_is_shared_with_them_and_the_published(alice, bob):
    carol, dave = make_user("carol"), make_user("dave")
    team = Group.objects.create(name="team")
    carol.groups.add(team)
    private = save(alice, "private")
    to_bob = save(alice, "to-bob")
    to_team = save(alice, "to-team")
    published = save(alice, "public")
    blueprints.blueprint_share(blueprint=to_bob, by=alice, users=["bob"])
    blueprints.blueprint_share(blueprint=to_team, by=alice, groups=["team"])
    published.published = True
    published.save()

    assert visible(alice) == {"private", "to-bob", "to-team", "public"}
    assert visible(bob) == {"to-bob", "public"}
    assert visible(carol) == {"to-team", "public"}
    assert visible(dave) == {"public"}
    assert private.pk not in set(Blueprint.objects.visible_to(bob).values_list("pk", flat=True))


def test_a_blueprint_shared_twice_is_listed_once(alice, bob):
    team = Group.objects.create(name="team")
    bob.groups.add(team)
    bp = save(alice)
    blueprints.blueprint_share(blueprint=bp, by=alice, users=["bob"], groups=["team"])
    bp.published = True
    bp.save()
    assert list(Blueprint.objects.visible_to(bob)) == [bp]


def test_staff_who_may_view_blueprints_see_every_one(alice):
    save(alice, "private")
    assert visible(make_staff("vera", "envs.view_blueprint")) == {"private"}
    assert visible(make_staff("stan")) == set()


def test_those_it_is_shared_with_only_read_it(alice, bob):
    bp = save(alice)
    blueprints.blueprint_share(blueprint=bp, by=alice, users=["bob"])
    for attempt in (
        lambda: blueprints.blueprint_save(blueprint=bp, by=bob, description="mine now"),
        lambda: blueprints.blueprint_share(blueprint=bp, by=bob, users=[]),
        lambda: blueprints.blueprint_delete(blueprint=bp, by=bob),
    ):
        with pytest.raises(Forbidden):
            attempt()
    bp.refresh_from_db()
    assert (bp.description, list(bp.shared_with_users.all())) == ("", [bob])


def test_the_owner_changes_shares_and_deletes_it(alice, bob):
    bp = save(alice)
    blueprints.blueprint_save(blueprint=bp, by=alice, name="renamed", description="new")
    blueprints.blueprint_share(blueprint=bp, by=alice, users=["bob", "alice"])  # the owner needs no share
    bp.refresh_from_db()
    assert (bp.name, bp.description, list(bp.shared_with_users.all())) == ("renamed", "new", [bob])
    blueprints.blueprint_delete(blueprint=bp, by=alice)
    assert not Blueprint.objects.exists()


def test_sharing_with_someone_unknown_is_refused_naming_them_and_changes_nothing(alice, bob):
    bp = save(alice)
    with pytest.raises(ConflictingInput) as refused:
        blueprints.blueprint_share(blueprint=bp, by=alice, users=["bob", "nobody"])
    assert (refused.value.field, refused.value.message) == ("users[1]", "must name an active user")
    with pytest.raises(ConflictingInput) as refused:
        blueprints.blueprint_share(blueprint=bp, by=alice, groups=["nowhere"])
    assert refused.value.field == "groups[0]"
    assert not bp.shared_with_users.exists()


def test_a_bad_file_is_refused_with_its_line_and_nothing_is_saved(alice):
    bad = FILE.replace("mem_mb: 128", "mem_mb: 0")
    with pytest.raises(EnvFileInvalid) as refused:
        save(alice, text=bad)
    assert refused.value.line == 6
    assert "line 6" in refused.value.message
    assert not Blueprint.objects.exists()


def test_a_bad_name_or_a_taken_one_is_refused(alice):
    with pytest.raises(InvalidInput) as refused:
        save(alice, name="Not A Label")
    assert refused.value.field == "name"
    save(alice, "taken")
    with pytest.raises(ConflictingInput, match="already have a blueprint named 'taken'"):
        save(alice, "taken")


def test_the_file_and_the_count_are_capped(alice, settings):
    with pytest.raises(InvalidInput, match="at most 65536 characters"):
        save(alice, text=FILE + "#" * 65536)
    settings.TT_MAX_BLUEPRINTS_PER_USER = 2
    save(alice, "one")
    save(alice, "two")
    with pytest.raises(ConflictingInput, match="TT_MAX_BLUEPRINTS_PER_USER"):
        save(alice, "three")
    assert Blueprint.objects.count() == 2


def test_publishing_takes_the_permission(alice, bob):
    bp = save(alice)
    changer = make_staff("vera", "envs.view_blueprint", "envs.change_blueprint")
    for user in (alice, make_staff("stan"), changer):
        with pytest.raises(Forbidden, match=r"envs\.publish_blueprint"):
            blueprints.blueprint_publish(blueprint=bp, by=user)
    blueprints.blueprint_publish(blueprint=bp, by=make_staff("pat", "envs.publish_blueprint"))
    assert visible(bob) == {"ci-bp"}
    blueprints.blueprint_unpublish(blueprint=bp, by=make_staff("pam", "envs.publish_blueprint"))
    assert visible(bob) == set()


def test_a_launch_makes_an_env_of_the_launchers_with_the_files_shape(alice, bob, template, run_tasks):
    bp = save(alice)
    blueprints.blueprint_share(blueprint=bp, by=alice, users=["bob"])
    with run_tasks():
        op = blueprints.blueprint_launch(blueprint=bp, by=bob)
    env = Env.objects.get(pk=op.env_id)
    assert (env.owner, env.name, op.kind, op.requested_by) == (bob, "ci", "env_create", bob)
    op.refresh_from_db()
    assert op.status == "succeeded"
    assert sorted((vm.name, vm.mem_mb, vm.template.name) for vm in env.vms.all()) == [
        ("web1", 128, "tt/busybox"), ("web2", 128, "tt/busybox")]
    assert (env.end_at - env.start_at).total_seconds() == 7200


def test_a_launch_takes_another_name_and_refuses_a_taken_one(alice, template, run_tasks):
    bp = save(alice)
    with run_tasks():
        blueprints.blueprint_launch(blueprint=bp, by=alice)
        again = blueprints.blueprint_launch(blueprint=bp, by=alice, name="ci-2")
    assert again.env.name == "ci-2"
    with pytest.raises(ConflictingInput) as refused:
        blueprints.blueprint_launch(blueprint=bp, by=alice)
    assert refused.value.field == "name"
    assert "already" in refused.value.message
    assert Env.objects.count() == 2


def test_a_blueprint_not_shared_is_not_launched(alice, bob, template):
    bp = save(alice)
    with pytest.raises(Forbidden):
        blueprints.blueprint_launch(blueprint=bp, by=bob)
    assert not Env.objects.exists()


def test_a_launch_with_the_same_idempotency_key_makes_one_env(alice, template, run_tasks):
    bp = save(alice)
    with run_tasks():
        first = blueprints.blueprint_launch(blueprint=bp, by=alice, idempotency_key="k1")
        second = blueprints.blueprint_launch(blueprint=bp, by=alice, idempotency_key="k1")
    assert first.pk == second.pk
    assert Env.objects.count() == 1


def test_the_admin_lists_searches_and_publishes_them(client, alice, bob):
    from tests.admin_support import make_operator, post_action

    make_operator(client)
    save(alice, "web", description="two web servers")
    bp = save(bob, "db")
    url = "/admin/envs/blueprint/"
    assert "two web servers" not in client.get(url).content.decode()  # the list shows names, owners
    found = client.get(url, {"q": "db"}).content.decode()
    assert f"/admin/envs/blueprint/{bp.pk}/change/" in found and "web" not in found.split("result_list", 1)[1]
    post_action(client, url, "publish", [bp])
    assert visible(alice) == {"web", "db"}
    assert "published" in client.get(f"{url}?published__exact=1").content.decode()


def test_a_launch_counts_against_the_launchers_quota(alice, bob, template, settings):
    bp = save(alice)
    bp.published = True
    bp.save()
    settings.TT_QUOTA_VMS = 1  # the file makes two
    with pytest.raises(QuotaExceeded):
        blueprints.blueprint_launch(blueprint=bp, by=bob)
    assert not Env.objects.exists()
