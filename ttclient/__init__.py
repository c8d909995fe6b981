"""ttclient: a small, typed Python client of TT Portal's REST API (over httpx).

    from ttclient import Client

    with Client("https://tt.example.org", token) as tt:
        op = tt.envs.create("demo", [{"name": "web", "template": "tt/busybox", "ports": [80]}])
        op = tt.operations.wait(op)
        env = tt.envs.get(op["env"])

No Django here: it is what the `tt` command line uses, and anyone's program may.
"""

from ttclient.errors import (
    ApiError,
    ConnectionFailed,
    NotLoggedIn,
    OperationFailed,
    TTClientError,
    WaitTimeout,
)

__all__ = ["ApiError", "Client", "ConnectionFailed", "NotLoggedIn", "OperationFailed", "TTClientError",
           "WaitTimeout", "create_token"]


def __getattr__(name: str):
    # The client (and httpx, a tenth of a second to import) only when asked for: the
    # command line reads ttclient.errors on every run, the client only when it calls.
    if name in ("Client", "create_token"):
        from ttclient import client

        return getattr(client, name)
    raise AttributeError(f"module 'ttclient' has no attribute {name!r}")
