"""What commands print: JSON for scripts (--json), tables and messages for people (Rich,
imported only when something is printed that way)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from functools import cache
from typing import Any

from ttcli.errors import Mode


def json_mode(enabled: bool) -> bool:
    """Record --json for the error printer (ttcli.errors.Group) and answer it."""
    Mode.json = enabled
    return enabled


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


# Piped output (a CI log, `| grep`) is not cut to 80 columns: tables keep each row whole.
PIPE_WIDTH = 250


@cache
def console():
    from rich.console import Console

    width = None if sys.stdout.isatty() else PIPE_WIDTH
    return Console(highlight=False, soft_wrap=True, width=width)


@cache
def err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def say(message: str) -> None:
    """A line for people on stdout (Rich markup allowed)."""
    console().print(message)


def note(message: str) -> None:
    """Progress and remarks on stderr, out of a pipeline's way."""
    err_console().print(message)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None) -> None:
    from rich import box
    from rich.table import Table

    grid = Table(*columns, title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    console().print(grid)


def when(stamp: str | None) -> str:
    """An API time (RFC 3339, UTC) as people read it: "2026-12-07 12:17:51"."""
    if not stamp:
        return ""
    return stamp.replace("T", " ").split(".")[0].rstrip("Z")


def duration(seconds: int | float) -> str:
    """3725 -> "1h 2m"; 59 -> "59s"."""
    seconds = int(seconds)
    if seconds < 0:
        return "-" + duration(-seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s" if secs and minutes < 10 else f"{minutes}m"
    return f"{secs}s"
