"""The API's JSON bodies are bounded in depth (ttportal/parsers.py): a body nested
thousands of levels deep is a 400 `parse_error` naming the rule, never a 500
(Python's json recurses per level), on every endpoint that reads a body."""

from __future__ import annotations

import pytest

from tests.api_support import build_full_world, client_for
from tests.module_world import module_world
from tests.test_api_matrix import ENDPOINTS, _url
from ttportal import limits
from ttportal.parsers import depth_of

DEEP = '{"name": ' + "[" * 3000 + "]" * 3000 + "}"
RULE = "JSON body nested more than 32 levels deep"
WRITES = [e for e in ENDPOINTS if e.method in ("post", "put", "delete")]


# One world for the module (tests/module_world.py): every case's request is rolled back with
# it, and an action's task, queued on commit, never runs.
shared, world, alice, _clean_test_driver = module_world(build_full_world, "world", "alice")


@pytest.mark.parametrize("endpoint", WRITES, ids=lambda e: e.id)
def test_a_body_nested_3000_deep_is_a_400_never_a_500(endpoint, world, alice, db_state):
    client = client_for(alice)
    before = db_state()
    response = getattr(client, endpoint.method)(_url(endpoint, world), DEEP, content_type="application/json")
    assert response.status_code < 500, response.content
    # An endpoint that reads its body: refused as malformed, nothing done.
    if endpoint.body is not None and endpoint.scope != "password_only":
        assert response.status_code == 400, response.content
        assert response.json() == {"code": "parse_error", "message": RULE}
        assert db_state() == before


def test_the_bound_is_on_the_whole_body_not_only_what_the_json_module_cannot_parse(alice, db):
    client = client_for(alice)
    just_over = '{"name": "x", "extra": ' + "[" * limits.JSON_DEPTH_MAX + "]" * limits.JSON_DEPTH_MAX + "}"
    response = client.post("/api/keys/", just_over, content_type="application/json")
    assert (response.status_code, response.json()["message"]) == (400, RULE)
    # As deep as allowed: parsed, then judged by the endpoint itself (here: the key is missing).
    at_limit = '{"extra": ' + "[" * (limits.JSON_DEPTH_MAX - 1) + "]" * (limits.JSON_DEPTH_MAX - 1) + "}"
    response = client.post("/api/keys/", at_limit, content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] != "parse_error"


def test_depth_is_counted_without_recursing():
    nested: list = []
    for _ in range(100_000):  # far past the interpreter's recursion limit
        nested = [nested]
    assert depth_of(nested) == limits.JSON_DEPTH_MAX + 1  # it stops once past the bound
    assert depth_of({"a": [1, {"b": []}]}) == 4
    assert depth_of("scalar") == 0
