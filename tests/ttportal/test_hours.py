"""The portal's one parser of typed hours (ttportal.hours)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ttportal.errors import InvalidInput
from ttportal.hours import hours, hours_rule, parse_hours

WEEK = 7 * 24 * 3600
YEAR = 365 * 24 * 3600


@pytest.mark.parametrize(("typed", "seconds"), [
    ("1", 3600), ("1.5", 5400), (" 2 ", 7200), ("0.01", 36), ("168", WEEK), ("1e2", 360000),
    ("0.0123", 44),  # whole seconds: 44.28 s is 44
])
def test_it_turns_typed_hours_into_whole_seconds(typed, seconds):
    assert parse_hours(typed, "hours", max_seconds=WEEK) == seconds


def test_it_takes_the_limit_and_refuses_a_second_more():
    assert parse_hours("168", "hours", max_seconds=WEEK) == WEEK
    a_second_more = str(Decimal(WEEK + 1) / 3600)
    with pytest.raises(InvalidInput):
        parse_hours(a_second_more, "hours", max_seconds=WEEK)


@pytest.mark.parametrize("typed", [
    "168.01", "1e9", "1e999999", "1e9999999999999999999", "nan", "NaN", "sNaN", "inf", "-inf",
    "Infinity", "-1", "0", "-0", "0.009", "abc", "0x10", "1/2", "", "   ", None,
])
def test_it_refuses_anything_but_a_number_of_hours_in_range_naming_the_field(typed):
    with pytest.raises(InvalidInput) as caught:
        parse_hours(typed, "hours", max_seconds=WEEK)
    assert caught.value.field == "hours"
    assert caught.value.message == "must be a number of hours between 0.01 and 168"


def test_it_allows_an_empty_field_only_when_it_means_something():
    assert parse_hours("", "life_time_hours", min_seconds=60, max_seconds=YEAR, empty="keep it") is None
    assert parse_hours(None, "life_time_hours", min_seconds=60, max_seconds=YEAR, empty="keep it") is None
    with pytest.raises(InvalidInput) as caught:
        parse_hours("-1", "life_time_hours", min_seconds=60, max_seconds=YEAR, empty="keep it")
    assert str(caught.value) == (
        "life_time_hours: must be a number of hours between 0.02 and 8760, or empty to keep it"
    )


def test_it_states_a_range_whose_every_number_is_taken():
    # 60 s is 0.0166… h: the rule says 0.02 (taken), never 0.01 (refused).
    assert hours_rule(min_seconds=60, max_seconds=100) == "must be a number of hours between 0.02 and 0.02"
    assert parse_hours("0.02", "h", min_seconds=60, max_seconds=YEAR) == 72
    with pytest.raises(InvalidInput):
        parse_hours("0.01", "h", min_seconds=60, max_seconds=YEAR)


@pytest.mark.parametrize(("seconds", "shown"), [(3600, "1"), (5400, "1.5"), (36, "0.01"), (WEEK, "168")])
def test_it_shows_seconds_as_hours(seconds, shown):
    assert hours(seconds) == shown
