"""What is wrong with an Env file: Problems (line, field, message) and the one error
that carries them all, so a user fixes every mistake in one pass."""

from __future__ import annotations

import re
from dataclasses import dataclass

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One mistake: its 1-based line (None when the file has no such line, e.g. a field the
    server refused that the file left out), the field as a dotted path (`vms[1].ports[0]`;
    "" for the file as a whole), and the rule it breaks."""

    line: int | None
    field: str
    message: str

    def where(self, source: str = "") -> str:
        place = f"{source}:{self.line}" if source and self.line else (f"line {self.line}" if self.line
                                                                        else source)
        return f"{place}: {self.field}" if place and self.field else place or self.field

    def describe(self, source: str = "") -> str:
        """`tt.yaml:12: vms[1].mem_mb: must be at least 16`."""
        where = self.where(source)
        return f"{where}: {self.message}" if where else self.message

    def as_dict(self) -> dict:
        return {"line": self.line, "field": self.field, "message": self.message}


class EnvFileError(ValueError):
    """The file is refused; `errors` lists every Problem found, in the order of the file."""

    def __init__(self, errors: list[Problem], *, source: str = "tt.yaml"):
        self.errors = sorted(errors, key=lambda p: (p.line is None, p.line or 0, p.field))
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(problem.describe(self.source) for problem in self.errors)


def field_of(path: Path) -> str:
    """('vms', 1, 'ports', 0) -> 'vms[1].ports[0]'."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


_PART = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")


def path_of(field: str) -> Path:
    """'vms[1].ports[0]' -> ('vms', 1, 'ports', 0)."""
    return tuple(int(m[1]) if m[1] is not None else m[2] for m in _PART.finditer(field or ""))


def line_at(lines: dict[Path, int], path: Path) -> int | None:
    """The line of `path`, or of the nearest enclosing field the file has."""
    while True:
        if path in lines:
            return lines[path]
        if not path:
            return None
        path = path[:-1]
