"""The portal's blueprints: the Blueprints page (mine, shared with me, published), saving a
file (there, from the New Env page's import card, from an Env page), one-click Launch with
CSRF, and the owner's Edit, Share and Delete refused to those who only read it."""

from __future__ import annotations

import re

from django.test import Client
from django.urls import reverse

import envfile
from envs import blueprints
from envs.models import Blueprint, Env
from tests.conftest import make_staff
from tests.envs.test_blueprints import FILE


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_page_lists_mine_shared_with_me_and_published(alice, bob):
    mine = blueprints.blueprint_save(by=bob, name="mine", text=FILE)
    shared = blueprints.blueprint_save(by=alice, name="shared", text=FILE)
    blueprints.blueprint_share(blueprint=shared, by=alice, users=["bob"])
    public = blueprints.blueprint_save(by=alice, name="public", text=FILE, description="for all")
    public.published = True
    public.save()
    blueprints.blueprint_save(by=alice, name="private", text=FILE)

    body = signed_in(bob).get(reverse("envs:blueprints")).content.decode()

    sections = {title: body.split(f"<h2>{title}</h2>", 1)[1].split("</section>", 1)[0]
                for title in ("Mine", "Shared with me", "Published")}
    assert "mine" in sections["Mine"] and "shared" not in sections["Mine"]
    assert "shared" in sections["Shared with me"] and "alice" in sections["Shared with me"]
    assert "public" in sections["Published"] and "for all" in sections["Published"]
    assert "private" not in body
    for bp in (mine, shared, public):  # each row launches in one click: a POST form with its CSRF token
        form = re.search(rf'<form method="post" action="{reverse("envs:blueprint_launch", args=[bp.pk])}"'
                         r'[^>]*>(.*?)</form>', body, re.S)
        assert form and "csrfmiddlewaretoken" in form.group(1)
    assert 'href="/blueprints/"' in body  # the nav link


def test_launch_makes_an_env_of_mine_and_needs_the_csrf_token(alice, bob, template):
    bp = blueprints.blueprint_save(by=alice, text=FILE)
    blueprints.blueprint_share(blueprint=bp, by=alice, users=["bob"])
    guarded = Client(enforce_csrf_checks=True)
    guarded.force_login(bob)
    url = reverse("envs:blueprint_launch", args=[bp.pk])

    assert guarded.post(url).status_code == 403  # no token
    assert not Env.objects.exists()
    guarded.get(reverse("envs:blueprints"))
    response = guarded.post(url, {"csrfmiddlewaretoken": guarded.cookies["csrftoken"].value})

    env = Env.objects.get()
    assert (env.owner, env.name) == (bob, "ci")
    assert response.status_code == 302 and response["Location"] == reverse("envs:detail", args=[env.pk])


def test_a_launch_under_a_taken_name_says_why(alice, template):
    bp = blueprints.blueprint_save(by=alice, text=FILE)
    client = signed_in(alice)
    url = reverse("envs:blueprint_launch", args=[bp.pk])
    client.post(url)
    page = client.post(url, follow=True).content.decode()
    assert "Not launched" in page and "already" in page
    assert Env.objects.count() == 1


def test_a_file_saved_here_or_from_the_new_env_page_keeps_it_and_a_bad_one_shows_its_line(alice, template):
    client = signed_in(alice)
    new_env_page = client.get(reverse("envs:create")).content.decode()
    assert f'formaction="{reverse("envs:blueprints")}"' in new_env_page  # the import card's button

    saved = client.post(reverse("envs:blueprints"), {"file-text": FILE, "file-idempotency_key": "k"})
    bp = Blueprint.objects.get(owner=alice)
    assert (bp.name, bp.text) == ("ci", FILE)
    assert saved["Location"] == reverse("envs:blueprint", args=[bp.pk])

    refused = client.post(reverse("envs:blueprints"),
                          {"file-name": "bad", "file-text": FILE.replace("128", "0")})
    assert refused.status_code == 200
    assert "line 6: vms[0].mem_mb" in refused.content.decode()
    assert Blueprint.objects.count() == 1


def test_an_env_is_saved_as_a_blueprint_from_its_page(alice, make_env):
    env = make_env(alice, vms=2)
    client = signed_in(alice)
    page = client.get(reverse("envs:detail", args=[env.pk])).content.decode()
    assert reverse("envs:save_blueprint", args=[env.pk]) in page
    response = client.post(reverse("envs:save_blueprint", args=[env.pk]), {"name": "copy"})
    bp = Blueprint.objects.get(owner=alice, name="copy")
    assert response["Location"] == reverse("envs:blueprint", args=[bp.pk])
    assert bp.env_name == env.name
    assert [vm["name"] for vm in envfile.load(bp.text).to_create_body()["vms"]] == sorted(
        env.vms.values_list("name", flat=True))


def test_the_owner_edits_shares_and_deletes_it(alice, bob):
    bp = blueprints.blueprint_save(by=alice, text=FILE)
    client = signed_in(alice)
    page = client.get(reverse("envs:blueprint", args=[bp.pk])).content.decode()
    assert all(part in page for part in ('id="edit"', 'id="share"', "Delete blueprint", FILE.splitlines()[0]))

    client.post(reverse("envs:blueprint", args=[bp.pk]), {"file-name": "web", "file-text": FILE,
                                                        "file-description": "edited"})
    client.post(reverse("envs:blueprint_share", args=[bp.pk]), {"users": "bob", "groups": ""})
    bp.refresh_from_db()
    assert (bp.name, bp.description, list(bp.shared_with_users.all())) == ("web", "edited", [bob])
    client.post(reverse("envs:blueprint_delete", args=[bp.pk]))
    assert not Blueprint.objects.exists()


def test_a_sharee_sees_the_file_without_the_owners_forms_and_is_refused_every_change(alice, bob):
    bp = blueprints.blueprint_save(by=alice, text=FILE)
    blueprints.blueprint_share(blueprint=bp, by=alice, users=["bob"])
    client = signed_in(bob)
    page = client.get(reverse("envs:blueprint", args=[bp.pk])).content.decode()
    assert "Launch" in page and "tt/busybox" in page
    assert 'id="edit"' not in page and 'id="share"' not in page and "Delete blueprint" not in page
    for name, data in (("envs:blueprint", {"file-text": FILE, "file-description": "mine"}),
                       ("envs:blueprint_share", {"users": "bob"}), ("envs:blueprint_delete", {}),
                       ("envs:blueprint_publish", {"published": "1"})):
        assert client.post(reverse(name, args=[bp.pk]), data).status_code == 403, name
    bp.refresh_from_db()
    assert (bp.description, bp.published) == ("", False)


def test_an_operator_publishes_it(alice, bob):
    bp = blueprints.blueprint_save(by=alice, text=FILE)
    operator = signed_in(make_staff("pam", "envs.view_blueprint", "envs.publish_blueprint"))
    assert "Publish to everyone" in operator.get(reverse("envs:blueprint", args=[bp.pk])).content.decode()
    operator.post(reverse("envs:blueprint_publish", args=[bp.pk]), {"published": "1"})
    assert signed_in(bob).get(reverse("envs:blueprint", args=[bp.pk])).status_code == 200
