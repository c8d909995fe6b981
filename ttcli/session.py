"""The client a command talks through, made from the stored or given credentials, with the
API's cooldown (429 + Retry-After) waited out visibly on stderr."""

from __future__ import annotations

import sys
import time

from ttcli import config

TIMEOUT = 30.0


def cooldown_notice(seconds: float, error) -> None:
    sys.stderr.write(f"tt: {error.message or 'cooldown'}: waiting {seconds:.0f} s, as the server asks\n")


def countdown(seconds: float) -> None:
    """Sleep `seconds`, counting down on stderr when it is a terminal."""
    end = time.monotonic() + seconds
    live = sys.stderr.isatty()
    while (left := end - time.monotonic()) > 0:
        if live:
            sys.stderr.write(f"\rtt: cooldown, {left:4.0f} s left ")
            sys.stderr.flush()
        time.sleep(min(left, 1.0))
    if live:
        sys.stderr.write("\r" + " " * 32 + "\r")


def client():
    """A ttclient.Client for the logged-in user (NotLoggedIn if nobody is)."""
    from ttclient import Client
    from ttclient.errors import NotLoggedIn

    creds = config.credentials()
    if creds is None:
        raise NotLoggedIn("not logged in: run `tt login URL`, or set TT_URL and TT_TOKEN")
    tt = Client(creds.url, creds.token, timeout=TIMEOUT, on_cooldown=cooldown_notice)
    tt.sleep = countdown
    return tt
