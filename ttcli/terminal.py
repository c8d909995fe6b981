"""The console in a terminal: raw mode (every key goes to the VM, Ctrl-C too), the VM's
output straight to stdout, Ctrl-] (0x1d, as telnet) to leave."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading

ESCAPE = b"\x1d"  # Ctrl-]


@contextlib.contextmanager
def raw_terminal(fd: int):
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def attach(console) -> None:
    """Copy the console to stdout and stdin to the console until Ctrl-] or the console ends."""
    closed = threading.Event()
    out = sys.stdout.buffer

    def pump() -> None:
        while not closed.is_set():
            data = console.recv(timeout=0.5)
            if data is None:
                closed.set()
                return
            if data:
                out.write(data)
                out.flush()

    reader = threading.Thread(target=pump, name="tt-console", daemon=True)
    stdin = sys.stdin.fileno()
    with raw_terminal(stdin):
        reader.start()
        while not closed.is_set():
            ready, _, _ = select.select([stdin], [], [], 0.2)
            if not ready:
                continue
            data = os.read(stdin, 4096)
            if not data:  # stdin ended (a pipe): leave once the console has had it
                break
            if ESCAPE in data:
                before = data.split(ESCAPE, 1)[0]
                if before:
                    console.send(before)
                break
            console.send(data)
        closed.set()
    reader.join(timeout=1)
