"""`tt env clone` against a live server on libvirt's test driver: clones made and waited for,
a count out of bounds refused naming the field (exit 1), usage errors exit 2."""

from __future__ import annotations

import json

import pytest

from envs.models import Env
from tests.ttcli.test_scenario import ok

pytestmark = pytest.mark.django_db(transaction=True)


def test_env_clone(live_server, alice, make_env, tt, tt_config):
    make_env(alice, name="demo", vms=2)
    ok(tt("login", live_server.url, "--user", "alice", "--password-stdin", input="pw-alice\n"))

    result = ok(tt("env", "clone", "demo", "-n", "2", "--wait"))
    assert "Env demo cloned as demo-clone-1, demo-clone-2 (operation" in result.stdout, result.stdout
    assert "succeeded" in result.stdout
    clones = Env.objects.live().filter(name__startswith="demo-clone-")
    assert sorted(e.name for e in clones) == ["demo-clone-1", "demo-clone-2"]
    assert all(e.vms.live().count() == 2 for e in clones)

    result = ok(tt("env", "clone", "demo", "--name", "try", "--lifetime", "2h", "--json"))
    op = json.loads(result.stdout)["operation"]
    assert (op["kind"], op["params"]["names"]) == ("env_clone", ["try"])

    result = tt("env", "clone", "demo", "-n", "11")
    assert result.exit_code == 1 and "count" in result.stderr, result.stderr
    assert tt("env", "clone", "demo", "-n", "two").exit_code == 2
