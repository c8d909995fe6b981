"""Hours as people type them into the portal's forms (an Env's lifetime, how far to
extend it, a snapshot's life time), parsed by one rule, and hours as the forms show them.

The services take seconds; the forms take hours, because that is how people think
of an Env's life. `parse_hours` turns what was typed into whole seconds or refuses
it with the form's own field name, the rule and the range allowed.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation

from ttportal.errors import InvalidInput

SECONDS_PER_HOUR = 3600
# The shortest lifetime or extension the forms take: 0.01 h.
MIN_SECONDS = 36

_HUNDREDTH = Decimal("0.01")


def hours(seconds: int) -> str:
    """3600 -> "1", 5400 -> "1.5": a number of seconds as the forms show it."""
    return _plain(Decimal(seconds) / SECONDS_PER_HOUR)


def _plain(value: Decimal) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def hours_rule(*, min_seconds: int, max_seconds: int) -> str:
    """The rule a refusal states. The ends are rounded inwards to hundredths of an
    hour (60 s shows as 0.02, not 0.01), so every number in the stated range is taken."""
    low = (Decimal(min_seconds) / SECONDS_PER_HOUR).quantize(_HUNDREDTH, rounding=ROUND_CEILING)
    high = (Decimal(max_seconds) / SECONDS_PER_HOUR).quantize(_HUNDREDTH, rounding=ROUND_FLOOR)
    return f"must be a number of hours between {_plain(low)} and {_plain(high)}"


def parse_hours(
    raw, field: str, *, max_seconds: int, min_seconds: int = MIN_SECONDS, empty: str = "",
) -> int | None:
    """What the user typed in `field`, a positive decimal number of hours, as whole seconds
    (truncated) between `min_seconds` and `max_seconds`.

    An empty field is refused unless `empty` says what it means ("keep it"): then it
    is allowed and gives None. Anything else that is not such a number (text, NaN,
    infinity, zero, a negative, too much) raises InvalidInput(field, the rule).
    """
    rule = hours_rule(min_seconds=min_seconds, max_seconds=max_seconds)
    if empty:
        rule = f"{rule}, or empty to {empty}"
    text = "" if raw is None else str(raw).strip()
    if not text:
        if empty:
            return None
        raise InvalidInput(field, rule)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidInput(field, rule) from None
    # Bounded as typed, before any arithmetic on it: 1e9 (or 1e999999) hours stops
    # here and never reaches a multiplication, a timedelta or the database.
    if not (value.is_finite() and 0 < value <= Decimal(max_seconds) / SECONDS_PER_HOUR):
        raise InvalidInput(field, rule)
    seconds = int(value * SECONDS_PER_HOUR)
    # The exact rule, on the whole seconds the caller gets.
    if not min_seconds <= seconds <= max_seconds:
        raise InvalidInput(field, rule)
    return seconds
