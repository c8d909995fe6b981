"""Counts: a VM named `web[1..3]` stands for web1, web2 and web3."""

from __future__ import annotations

import re

_COUNT = re.compile(r"^(?P<stem>.+)\[(?P<first>[0-9]+)\.\.(?P<last>[0-9]+)\]$")


def span(name: str) -> tuple[str, int, int, int] | None:
    """(stem, first, last, width) of a count, None for a plain name. `width` pads the
    numbers when the first is written with leading zeros (web[01..10])."""
    match = _COUNT.match(name)
    if match is None:
        return None
    first = match["first"]
    width = len(first) if first.startswith("0") and len(first) > 1 else 0
    return match["stem"], int(first), int(match["last"]), width


def size(name: str) -> int:
    """How many VMs the name stands for (0 for a backwards count such as web[3..1])."""
    count = span(name)
    return 1 if count is None else max(0, count[2] - count[1] + 1)


def expand(name: str) -> list[str]:
    count = span(name)
    if count is None:
        return [name]
    stem, first, last, width = count
    return [f"{stem}{n:0{width}d}" if width else f"{stem}{n}" for n in range(first, last + 1)]
