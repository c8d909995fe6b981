"""tt ops ls|watch."""

from __future__ import annotations

from typing import Annotated

import typer

from ttcli import output
from ttcli.commands.common import Json, group

app = group(help="Operations: what was asked of your Envs, and how it went.")


@app.command("ls")
def ls(
    env: Annotated[str | None, typer.Argument(metavar="[ENV]", help="Only this Env's.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="At most this many, newest first.")] = 20,
    as_json: Json = False,
):
    """The newest operations on your Envs."""
    from ttcli.session import client

    output.json_mode(as_json)
    with client() as tt:
        env_id = tt.envs.find(env)["id"] if env else None
        ops = tt.operations.list(env=env_id, limit=limit)
    if as_json:
        output.emit_json(ops)
        return
    output.table(("id", "kind", "target", "status", "progress", "created", "error"),
                 [(o["id"], o["kind"], o["target"], o["status"], f"{o['progress']}%",
                   output.when(o["created_at"]), o["error_message"]) for o in ops])


@app.command()
def watch(
    op_id: Annotated[int, typer.Argument(metavar="ID")],
    timeout: Annotated[float | None, typer.Option(metavar="SECONDS",
                                                  help="Give up (exit 3) after this long.")] = None,
    as_json: Json = False,
):
    """Follow an operation to its end.

    Its log is printed as it grows; tt exits 0 if it succeeded, 1 if it failed."""
    import sys

    from ttcli.session import client

    output.json_mode(as_json)
    printed = 0

    def show(op: dict) -> None:
        nonlocal printed
        if as_json:
            return
        lines = op["log"].splitlines()
        for line in lines[printed:]:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
        printed = len(lines)

    with client() as tt:
        op = tt.operations.wait(op_id, show, timeout=timeout)
    if as_json:
        output.emit_json(op)
    else:
        output.say(f"operation {op['id']} ({op['kind']}) {op['status']}")
