"""`tt env share|members|unshare|transfer` against a live server: a user and a group made
members, a role changed by sharing again, a refusal naming the field (exit 1), the Env given
to a member, who then sees it as theirs."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group

from envs.models import Env, EnvMember
from tests.ttcli.test_scenario import ok

pytestmark = pytest.mark.django_db(transaction=True)


def test_env_share_members_unshare_transfer(live_server, alice, bob, make_env, tt, tt_config):
    env = make_env(alice, name="demo")
    Group.objects.create(name="qa")
    ok(tt("login", live_server.url, "--user", "alice", "--password-stdin", input="pw-alice\n"))

    assert "shared with bob as viewer" in ok(tt("env", "share", "demo", "bob")).stdout
    assert "shared with @qa as operator" in ok(tt("env", "share", "demo", "@qa", "--role", "operator")).stdout
    assert "shared with bob as admin" in ok(tt("env", "share", "demo", "bob", "-r", "admin")).stdout  # again
    rows = json.loads(ok(tt("env", "members", "demo", "--json")).stdout)
    assert sorted((r["user"] or "@" + r["group"], r["role"]) for r in rows) == [("@qa", "operator"),
                                                                                ("bob", "admin")]
    bad = tt("env", "share", "demo", "nobody")
    assert bad.exit_code == 1 and "user" in bad.stderr and "nobody" in bad.stderr, bad.stderr

    assert "no longer shared with @qa" in ok(tt("env", "unshare", "demo", "@qa")).stdout
    assert "now belongs to bob" in ok(tt("env", "transfer", "demo", "bob")).stdout
    assert Env.objects.get(pk=env.pk).owner == bob
    assert EnvMember.objects.get(env=env).user == alice  # alice stays, an admin of it
    assert "admin" in ok(tt("env", "members", "bob/demo")).stdout
