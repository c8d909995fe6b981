"""tt login / logout, tt quota, tt keys add|ls|rm."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from ttcli import config, output
from ttcli.commands.common import Json, group
from ttcli.errors import USAGE, Failure

keys_app = group(help="Your SSH public keys, for the tt user of VMs made afterwards.")


def register(app: typer.Typer) -> None:
    app.command()(login)
    app.command()(logout)
    app.command()(quota)


def login(
    url: Annotated[str, typer.Argument(help="The portal, e.g. https://tt.example.org")],
    token: Annotated[str | None, typer.Option(help="An API token you already have (else user and password).",
                                              envvar="TT_TOKEN", show_envvar=False)] = None,
    user: Annotated[str | None, typer.Option("--user", "-u",
                                             help="Your username (asked if not given).")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin",
                                                 help="Read the password from stdin (CI).")] = False,
    as_json: Json = False,
):
    """Log in to a portal.

    Makes an API token with your user and password (or takes --token) and keeps it in your
    config directory, readable by you alone. TT_URL and TT_TOKEN override it (CI)."""
    from ttclient import Client, create_token

    output.json_mode(as_json)
    url = url.rstrip("/")
    if "://" not in url:
        raise Failure(f"{url!r}: give the portal's URL with its scheme (https://…)", USAGE, field="url")
    token_id = ""
    if not token:
        user = user or typer.prompt("Username", default=os.environ.get("USER") or None)
        password = (typer.get_text_stream("stdin").readline().rstrip("\n") if password_stdin
                    else typer.prompt("Password", hide_input=True))
        made = create_token(url, user, password, name=f"tt on {socket.gethostname()}"[:100])
        token, token_id = made["token"], made.get("id", "")
    with Client(url, token) as tt:
        who = tt.quota()["user"]
    path = config.save(url, token, who, token_id)
    if as_json:
        output.emit_json({"url": url, "user": who, "config": str(path)})
    else:
        output.say(f"Logged in to {url} as {who}; the token is in {path}")


def logout(as_json: Json = False):
    """Forget the stored token.

    The token stays valid until it expires: revoke it in the portal."""
    output.json_mode(as_json)
    forgot = config.forget()
    if as_json:
        output.emit_json({"forgotten": forgot})
    else:
        output.say("Token forgotten." if forgot else "Not logged in.")


def quota(as_json: Json = False):
    """Your quotas and what you use of them."""
    from ttcli.session import client

    output.json_mode(as_json)
    with client() as tt:
        body = tt.quota()
    if as_json:
        output.emit_json(body)
        return
    rows = []
    for name, line in body.items():
        if isinstance(line, dict):
            limit = output.duration(line["limit"]) if "used" not in line else line["limit"]
            rows.append((name, line.get("used", ""), limit, line["source"]))
    output.table(("quota", "used", "limit", "from"), rows, title=f"quotas of {body['user']}")


@keys_app.command("add")
def keys_add(
    path: Annotated[Path, typer.Argument(help="A public key file, e.g. ~/.ssh/id_ed25519.pub ('-': stdin).")],
    name: Annotated[str | None, typer.Option(help="Default: the key's comment.")] = None,
    as_json: Json = False,
):
    """Add an SSH public key.

    VMs made from now on let it in as the tt user."""
    from ttcli.session import client

    output.json_mode(as_json)
    if str(path) == "-":
        text = typer.get_text_stream("stdin").read()
    else:
        if path.suffix != ".pub" and path.with_suffix(path.suffix + ".pub").exists():
            raise Failure(f"{path} looks like a private key: give {path}.pub", USAGE, field="path")
        try:
            text = path.expanduser().read_text()
        except OSError as exc:
            raise Failure(f"{path}: {exc.strerror}", USAGE, field="path") from None
    with client() as tt:
        key = tt.keys.add(text, name=name)
    if as_json:
        output.emit_json(key)
    else:
        output.say(f"Added {key['type']} key {key['name']} ({key['fingerprint']})")


@keys_app.command("ls")
def keys_ls(as_json: Json = False):
    """Your SSH public keys."""
    from ttcli.session import client

    output.json_mode(as_json)
    with client() as tt:
        keys = tt.keys.list()
    if as_json:
        output.emit_json(keys)
    else:
        output.table(("id", "name", "type", "fingerprint"),
                     [(k["id"], k["name"], k["type"], k["fingerprint"]) for k in keys])


@keys_app.command("rm")
def keys_rm(key_id: Annotated[int, typer.Argument(metavar="ID")], as_json: Json = False):
    """Delete one of your SSH keys.

    VMs made from now on no longer get it."""
    from ttcli.session import client

    output.json_mode(as_json)
    with client() as tt:
        tt.keys.delete(key_id)
    if as_json:
        output.emit_json({"deleted": key_id})
    else:
        output.say(f"Deleted key {key_id}")
