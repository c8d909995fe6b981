"""Lifetimes: seconds, or a duration such as "2h", "90m", "1d", "1h30m"."""

from __future__ import annotations

import re

UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"([0-9]+)([dhms])")


def seconds(value: int | str) -> int:
    """The seconds a lifetime the schema took stands for."""
    if isinstance(value, int):
        return value
    return sum(int(number) * UNITS[unit] for number, unit in _PART.findall(value))


def text(total: int) -> str | int:
    """The shortest way to write `total` seconds: "2h", "1d", "1h30m"; seconds when the
    duration does not come out in whole minutes."""
    if total <= 0 or total % 60:
        return total
    parts = []
    for unit, size in UNITS.items():
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts)
