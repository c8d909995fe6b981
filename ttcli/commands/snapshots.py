"""tt snapshot create|ls|apply|rm."""

from __future__ import annotations

from typing import Annotated

import typer

from ttcli import output
from ttcli.commands.common import Json, Timeout, Wait, finish, group
from ttcli.errors import USAGE, Failure

app = group(help="Snapshots of VMs: create, ls, apply, rm.")

VmArg = Annotated[str, typer.Argument(metavar="ENV/VM", help="The VM, as ENV/VM.")]
SnapArg = Annotated[str, typer.Argument(metavar="SNAPSHOT", help="The snapshot's name (or id).")]
TIMEOUT = 900.0


def _vm(tt, text: str) -> dict:
    from ttcli.refs import vm_ref

    ref = vm_ref(text)
    return tt.vms.find(tt.envs.find(ref.env), ref.vm)


def _snapshot(tt, vm_text: str, name: str) -> dict:
    from ttclient.errors import ApiError

    vm = _vm(tt, vm_text)
    snaps = tt.snapshots.list(vm=vm["id"])
    for snap in snaps:
        if snap["name"] == name or str(snap["id"]) == name:
            return snap
    names = ", ".join(s["name"] for s in snaps) or "none"
    raise ApiError(404, "not_found", f"VM {vm_text} has no snapshot {name} (its snapshots: {names})",
                   "snapshot")


@app.command()
def create(
    vm: VmArg,
    name: Annotated[str, typer.Argument(help="A DNS label, unique per VM.")],
    life_time: Annotated[str | None, typer.Option("--life-time", help="Remove it after this long "
                                                  "(1h, 7d); default: kept until deleted.")] = None,
    wait: Wait = False,
    timeout: Timeout = TIMEOUT,
    as_json: Json = False,
):
    """Snapshot a VM.

    The VM is stopped for consistency, then put back in its power state."""
    from ttcli.refs import seconds
    from ttcli.session import client

    output.json_mode(as_json)
    life = seconds(life_time) if life_time else None
    with client() as tt:
        found = _vm(tt, vm)
        op = tt.vms.snapshot(found, name, life_time=life)
        finish(tt, op, wait=wait, timeout=timeout, as_json=as_json,
               done=f"Snapshot {name} of {vm} taken" if wait else f"Taking snapshot {name} of {vm}")


@app.command("ls")
def ls(
    where: Annotated[str, typer.Argument(metavar="ENV[/VM]", help="An Env, or one VM of it.")],
    as_json: Json = False,
):
    """Snapshots of an Env's VMs (or of one VM)."""
    from ttcli.session import client

    output.json_mode(as_json)
    with client() as tt:
        if "/" in where and not _is_owner_env(tt, where):
            snaps = tt.snapshots.list(vm=_vm(tt, where)["id"])
        else:
            snaps = tt.snapshots.list(env=tt.envs.find(where)["id"])
    if as_json:
        output.emit_json(snaps)
        return
    output.table(("id", "vm", "name", "status", "created", "expires"),
                 [(s["id"], s["vm_name"], s["name"], s["status"], output.when(s["created_at"]),
                   output.when(s["expires_at"])) for s in snaps])


def _is_owner_env(tt, where: str) -> bool:
    """`alice/demo` (staff naming an Env by owner) rather than `demo/web` (a VM)."""
    if where.count("/") != 1:
        return False
    from ttclient.errors import ApiError

    env_name, _, vm_name = where.partition("/")
    try:
        env = tt.envs.find(env_name)
    except ApiError:
        return True
    return not any(v["name"] == vm_name for v in env["vms"])


@app.command()
def apply(vm: VmArg, snapshot: SnapArg, wait: Wait = False, timeout: Timeout = TIMEOUT,
          as_json: Json = False):
    """Put the VM back to the snapshot."""
    from ttcli.session import client

    output.json_mode(as_json)
    with client() as tt:
        snap = _snapshot(tt, vm, snapshot)
        finish(tt, tt.snapshots.apply(snap), wait=wait, timeout=timeout, as_json=as_json,
               done=f"{vm} is back to snapshot {snap['name']}" if wait else
               f"Putting {vm} back to snapshot {snap['name']}")


@app.command()
def rm(vm: VmArg, snapshot: SnapArg, wait: Wait = False, timeout: Timeout = TIMEOUT, as_json: Json = False):
    """Delete the snapshot."""
    from ttcli.session import client

    output.json_mode(as_json)
    with client() as tt:
        snap = _snapshot(tt, vm, snapshot)
        finish(tt, tt.snapshots.delete(snap), wait=wait, timeout=timeout, as_json=as_json,
               done=f"Snapshot {snap['name']} deleted" if wait else f"Deleting snapshot {snap['name']}")


__all__ = ["USAGE", "Failure", "app"]
