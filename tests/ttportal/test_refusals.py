"""The one mapping from an exception to what the user is told (ttportal.refusals)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError

from tests.support import RETRY
from ttportal.errors import ErrorCode, IllegalState, InvalidInput
from ttportal.refusals import refusal


def test_it_passes_a_service_refusal_through_as_it_is():
    error = InvalidInput("name", "must be a DNS label")
    assert refusal(error) is error


def test_it_turns_a_race_the_database_caught_into_a_retry():
    error = refusal(IntegrityError("UNIQUE constraint failed: envs_env.owner_id, envs_env.name"))
    assert isinstance(error, IllegalState)
    assert (error.code, error.message, error.field) == (ErrorCode.ILLEGAL_STATE, RETRY, None)


@pytest.mark.parametrize("exc", [ValueError("boom"), KeyError("x"), RuntimeError()])
def test_it_leaves_anything_else_to_propagate(exc):
    assert refusal(exc) is None
