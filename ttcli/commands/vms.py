"""tt vm ls."""

from __future__ import annotations

from typing import Annotated

import typer

from ttcli import output
from ttcli.commands.common import Json, group

app = group(help="VMs of an Env.")


@app.command("ls")
def ls(env: Annotated[str, typer.Argument(metavar="ENV", help="The Env's name, or id.")],
       as_json: Json = False):
    """An Env's VMs: status, size, address, ports."""
    from ttcli import connections
    from ttcli.session import client

    output.json_mode(as_json)
    with client() as tt:
        found = tt.envs.find(env)
        vms = tt.vms.list(env=found["id"])
    if as_json:
        output.emit_json(vms)
        return
    output.table(("id", "vm", "status", "template", "cpu", "MiB", "ip", "connect"),
                 [(vm["id"], vm["name"], vm["status"], vm["template"], vm["cpu_num"], vm["mem_mb"], vm["ip"],
                   "\n".join(c.line for c in connections.connections(vm))) for vm in vms])
