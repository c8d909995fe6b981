"""Reading a guest's serial console log (written by virtlogd) for the portal."""

from __future__ import annotations

import os
import re

# CSI and OSC sequences, then the C0 controls other than tab and newline: the console
# speaks to a terminal (colours, cursor moves, \r\n line ends), the portal shows text.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def read_console_tail(path: str, limit: int) -> str:
    """The last `limit` bytes of the log at `path` as plain text, starting at a whole
    line; "" when there is no log yet (a VM that never booted)."""
    try:
        with open(path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - limit))
            data = log.read(limit)
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
    if size > limit and "\n" in text:
        text = text.split("\n", 1)[1]  # the first line was cut
    return _CONTROLS.sub("", _ESCAPES.sub("", text))
