"""Schemathesis against a live server: every operation of /api/schema/, a bounded
number of generated requests each, sent over HTTP with a valid token. No answer may
be a server error, and every answer must match the schema (status, content type,
body, headers).

The server is pytest-django's `live_server`: a real HTTP server on a free port,
serving this process's test database (SQLite or PostgreSQL alike), so the fixtures
below can prepare the data it serves.

Operations are walked from Python rather than with `schema.parametrize()`:
schemathesis' lazy pytest loader does not run on pytest 9 (it sets a node
attribute pytest renamed).
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.services import token_create

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES = 10  # per operation: bounded, so the run stays well under a minute


def test_it_conforms_to_its_schema_under_generated_requests(live_server, alice, make_env):
    make_env(alice, vms=2)  # something real behind the small ids the generator tries
    _, secret = token_create(user=alice, name="schemathesis")
    headers = {"Authorization": f"Token {secret}"}
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/")

    failures: dict[str, str] = {}
    tried = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        tried += 1

        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # every operation's failures, not only the first
            failures[f"{operation.method.upper()} {operation.path}"] = str(exc)[:2000]

    assert tried >= 30
    assert not failures, "\n\n".join(f"{op}: {why}" for op, why in failures.items())
