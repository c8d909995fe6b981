"""tt env up|validate|ls|show|down|extend|stop|start|clone|export|share|unshare|members|transfer."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ttcli import output
from ttcli.commands.common import Json, Timeout, Wait, finish, group
from ttcli.errors import USAGE, Failure

app = group(help="Envs: up from a tt.yaml file, list, show, extend, stop, start, clone, down, share.")

EnvName = Annotated[str, typer.Argument(metavar="ENV", help="The Env's name (owner/name for staff), or id.")]
EnvFileOpt = Annotated[Path, typer.Option("--file", "-f", help="The Env file ('-': stdin).")]
UP_TIMEOUT = 900.0


# --- Env files ------------------------------------------------------------------------------


def read_envfile(path: Path):
    """The Env file at `path`, checked offline: a Failure listing each `file:line: field: rule`
    if it is not a valid one."""
    try:
        import envfile
    except ImportError:
        raise Failure("Env files need the envfile package, which this installation lacks") from None
    if str(path) == "-":
        text, source, base = sys.stdin.read(), "<stdin>", Path.cwd()
    else:
        try:
            text = path.read_text()
        except OSError as exc:
            raise Failure(f"{path}: {exc.strerror}", USAGE, field="file") from None
        source, base = str(path), path.resolve().parent
    try:
        return envfile.load(text, source=source, base_dir=base)
    except envfile.EnvFileError as exc:
        problems = [{"line": p.line, "field": p.field, "message": p.message} for p in exc.errors]
        raise Failure(str(exc), data={"code": "invalid", "message": str(exc), "problems": problems}) from None


@app.command()
def validate(file: EnvFileOpt, as_json: Json = False):
    """Check an Env file offline.

    Every problem is shown with its line number, as `tt.yaml:12: vms[1].mem_mb: …`."""
    output.json_mode(as_json)
    env_file = read_envfile(file)
    document = env_file.document()
    if as_json:
        output.emit_json({"valid": True, "name": env_file.name, "document": document})
    else:
        vms = document.get("vms", [])
        output.say(f"{file}: valid: Env {env_file.name}, {len(vms)} VM entr{'y' if len(vms) == 1 else 'ies'}")


@app.command()
def up(
    file: EnvFileOpt,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Instead of the file's name.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until every VM runs and each forwarded "
                                       "TCP port answers; then print how to connect.")] = False,
    timeout: Timeout = UP_TIMEOUT,
    port_check: Annotated[bool, typer.Option("--port-check/--no-port-check",
                                             help="With --wait: wait for each forwarded TCP port to "
                                             "accept a connection.")] = True,
    as_json: Json = False,
):
    """Create the Env a file describes.

    An Env of that name that exists already is reported, not made again. With --wait, a bar per
    VM follows the work until every VM runs and each forwarded TCP port accepts a connection
    (--no-port-check: until they run), then how to connect is printed."""
    from ttcli import connections
    from ttcli.readiness import wait_for_env
    from ttcli.session import client

    output.json_mode(as_json)
    env_file = read_envfile(file)
    # The server reads the file too (POST /api/envs/?format=envfile: one parser for every
    # client, and the peers it names are applied with the Env): it gets the document as checked
    # here, its @file user_data inlined, since the server reads no file of ours.
    document = env_file.document()
    if name:
        document["name"] = name
    body = {"name": document["name"]}
    with client() as tt:
        existing = [e for e in tt.envs.list(name=body["name"]) if e["name"] == body["name"]]
        if existing:  # staff see everyone's Envs: only one's own counts as "it exists"
            me = tt.quota()["user"]
            existing = [e for e in existing if e["owner"] == me]
        created = not existing
        op = None
        if created:
            op = tt.envs.create_from_envfile(json.dumps(document))
            env_id = op["env"]
            if not as_json:
                output.note(f"Creating Env {body['name']} (operation {op['id']})")
        else:
            env_id = existing[0]["id"]
            if not as_json:
                output.note(f"Env {body['name']} exists already (id {env_id}): nothing created")
        if not wait:
            env, vms = tt.envs.get(env_id), []
        else:
            env, vms = wait_for_env(tt, env_id, op, timeout=timeout, check_ports=port_check, quiet=as_json)
            if op is not None:
                op = tt.operations.get(op)
    lines = [c for vm in vms for c in connections.connections(vm)]
    if as_json:
        output.emit_json({"created": created, "env": env, "operation": op, "vms": vms,
                          "connections": [c.as_dict() for c in lines]})
        return
    if not wait:
        output.say(f"Env {env['name']} (id {env['id']}): {env['status']}"
                   + (f"; `tt ops watch {op['id']}` follows it" if op else ""))
        return
    output.say(f"Env {env['name']} is ready: {len(vms)} VM{'s' * (len(vms) != 1)} running")
    width = max((len(c.vm) for c in lines), default=0)
    for c in lines:
        output.say(f"{c.vm:<{width}}  {c.line}")


# --- the Envs you have ------------------------------------------------------------------------------


@app.command("ls")
def ls(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Destroyed Envs too.")] = False,
    as_json: Json = False,
):
    """Your Envs (staff: every Env)."""
    from ttcli.session import client

    output.json_mode(as_json)
    with client() as tt:
        envs = tt.envs.list(live=None if all_ else True)
    if as_json:
        output.emit_json(envs)
        return
    output.table(("id", "name", "owner", "status", "vms", "left"),
                 [(e["id"], e["name"], e["owner"], _status(e), len(e["vms"]),
                   output.duration(e["seconds_left"])) for e in envs])


def _status(env: dict) -> str:
    stopped = env.get("is_stopped") and env["status"] != "destroyed"
    return f"{env['status']} (stopped)" if stopped else env["status"]


@app.command()
def show(env: EnvName, as_json: Json = False):
    """One Env: its state, end, VMs and how to reach them."""
    from ttcli import connections
    from ttcli.session import client

    output.json_mode(as_json)
    with client() as tt:
        found = tt.envs.find(env)
        vms = [tt.vms.get(vm["id"]) for vm in found["vms"]]
    if as_json:
        output.emit_json({**found, "vms": vms})
        return
    output.say(f"[bold]{found['name']}[/bold] (id {found['id']}, owner {found['owner']}): {_status(found)}")
    output.say(f"ends {output.when(found['end_at'])} UTC ({output.duration(found['seconds_left'])} left)"
               + (", outgoing traffic denied" if found["deny_outgoing"] else ""))
    if found.get("asleep_since"):
        output.say(f"asleep since {output.when(found['asleep_since'])} UTC: its next connection wakes it")
    elif found.get("idle_suspend"):
        output.say(f"sleeps after {found['idle_suspend']} min idle")
    if found["cooldown_remaining"]:
        output.say(f"cooldown: {found['cooldown_remaining']} s before the next long action")
    output.table(("vm", "status", "template", "cpu", "MiB", "address", "connect"),
                 [(vm["name"], vm["status"], vm["template"], vm["cpu_num"], vm["mem_mb"], vm["ip"],
                   "\n".join(c.line for c in connections.connections(vm))) for vm in vms])


@app.command()
def down(env: EnvName, wait: Wait = False, timeout: Timeout = UP_TIMEOUT, as_json: Json = False):
    """Destroy the Env and all its VMs."""
    from ttcli.session import client

    output.json_mode(as_json)
    with client() as tt:
        found = tt.envs.find(env)
        finish(tt, tt.envs.delete(found), wait=wait, timeout=timeout, as_json=as_json,
               done=f"Env {found['name']} destroyed" if wait else f"Destroying Env {found['name']}")


@app.command()
def extend(
    env: EnvName,
    duration: Annotated[str, typer.Argument(help="How long from now it should live: 90m, 2h, 1d.")],
    as_json: Json = False,
):
    """Make the Env end DURATION from now (2h, 1d…)."""
    from ttcli.refs import seconds
    from ttcli.session import client

    output.json_mode(as_json)
    lifetime = seconds(duration)
    with client() as tt:
        found = tt.envs.find(env)
        op = tt.envs.extend(found, lifetime=lifetime)
        op = tt.operations.wait(op, timeout=60)
        after = tt.envs.get(found)
    if as_json:
        output.emit_json({"operation": op, "env": after})
    else:
        left = output.duration(after["seconds_left"])
        output.say(f"Env {after['name']} now ends {output.when(after['end_at'])} UTC ({left} left)")


def _power(env: str, action: str, wait: bool, timeout: float, as_json: bool) -> None:
    from ttcli.session import client

    output.json_mode(as_json)
    with client() as tt:
        found = tt.envs.find(env)
        op = getattr(tt.envs, action)(found)
        done = f"Env {found['name']} {action}{'ped' if action == 'stop' else 'ed'}" if wait else \
            f"{action.capitalize()}ing Env {found['name']}"
        finish(tt, op, wait=wait, timeout=timeout, as_json=as_json, done=done,
               nothing=f"Env {found['name']}: nothing to {action}")


@app.command()
def stop(env: EnvName, wait: Wait = False, timeout: Timeout = UP_TIMEOUT, as_json: Json = False):
    """Stop every running VM of the Env."""
    _power(env, "stop", wait, timeout, as_json)


@app.command()
def start(env: EnvName, wait: Wait = False, timeout: Timeout = UP_TIMEOUT, as_json: Json = False):
    """Start every stopped VM of the Env."""
    _power(env, "start", wait, timeout, as_json)


@app.command()
def clone(
    env: EnvName,
    count: Annotated[int, typer.Option("--count", "-n", help="How many clones (1-10).")] = 1,
    name: Annotated[str | None, typer.Option("--name", help="The clone's name (one), or the prefix "
                                             "of `NAME-1`, `NAME-2`…; default `ENV-clone-N`.")] = None,
    lifetime: Annotated[str | None, typer.Option("--lifetime",
                                                 help="How long the clones live: 2h, 1d.")] = None,
    wait: Wait = False, timeout: Timeout = UP_TIMEOUT, as_json: Json = False,
):
    """Clone the Env: new Envs whose VMs start from its disks as they are now.

    Each VM's disk is cut (its filesystems frozen by its guest agent, if it has one) and the
    clones' disks sit on it; they get new names, addresses and machine ids. The Env keeps running."""
    from ttcli.refs import seconds
    from ttcli.session import client

    output.json_mode(as_json)
    with client() as tt:
        found = tt.envs.find(env)
        op = tt.envs.clone(found, count=count, name=name,
                           lifetime=seconds(lifetime) if lifetime is not None else None)
        names = ", ".join(op.get("params", {}).get("names", [])) or f"{count} clone(s)"
        finish(tt, op, wait=wait, timeout=timeout, as_json=as_json,
               done=f"Env {found['name']} cloned as {names}" if wait else
               f"Cloning Env {found['name']} as {names}")


@app.command()
def export(env: EnvName, as_json: Json = False):
    """Print the Env as an Env file (tt.yaml).

    `tt env export demo > tt.yaml` keeps it, `tt env up -f tt.yaml` makes it again."""
    from ttcli.session import client

    output.json_mode(as_json)
    with client() as tt:
        found = tt.envs.find(env)
        text = tt.envs.envfile(found)
    if as_json:
        output.emit_json({"env": found["id"], "envfile": text})
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")



# --- sharing (docs/guide/sharing.md) -----------------------------------------------------------

Who = Annotated[str, typer.Argument(metavar="USER|@GROUP", help="A username, or @group for a group.")]


def _who(who: str) -> dict:
    return {"group": who[1:]} if who.startswith("@") else {"user": who}


@app.command()
def members(env: EnvName, as_json: Json = False):
    """Whom the Env is shared with, and in which role."""
    from ttcli.session import client

    output.json_mode(as_json)
    with client() as tt:
        found = tt.envs.find(env)
        rows = tt.envs.members(found)
    if as_json:
        output.emit_json(rows)
        return
    output.say(f"Env {found['name']}: owner {found['owner']}")
    output.table(("member", "role", "granted by", "granted"),
                 [(row["user"] or f"@{row['group']}", row["role"], row["granted_by"] or "",
                   output.when(row["granted_at"])) for row in rows])


@app.command()
def share(
    env: EnvName, who: Who,
    role: Annotated[str, typer.Option("--role", "-r", help="viewer, operator or admin.")] = "viewer",
    as_json: Json = False,
):
    """Share the Env with a user or a group (@name) in a role; again: change the role."""
    from ttcli.session import client
    from ttclient.errors import ApiError

    output.json_mode(as_json)
    with client() as tt:
        found = tt.envs.find(env)
        try:
            member = tt.envs.share(found, role=role, **_who(who))
        except ApiError as exc:
            if exc.status != 422 or "member of this Env already" not in exc.message:
                raise
            member = tt.envs.set_role(found, tt.envs.member(found, who), role)
    if as_json:
        output.emit_json(member)
    else:
        output.say(f"Env {found['name']} shared with {who} as {member['role']}")


@app.command()
def unshare(env: EnvName, who: Who, as_json: Json = False):
    """Take the Env away from a user or group (at once: their open consoles close)."""
    from ttcli.session import client

    output.json_mode(as_json)
    with client() as tt:
        found = tt.envs.find(env)
        member = tt.envs.member(found, who)
        tt.envs.unshare(found, member)
    if as_json:
        output.emit_json({"env": found["id"], "removed": member})
    else:
        output.say(f"Env {found['name']} no longer shared with {who}")


@app.command()
def transfer(
    env: EnvName,
    owner: Annotated[str, typer.Argument(metavar="USER", help="The new owner: a member of the Env.")],
    as_json: Json = False,
):
    """Give the Env to one of its members (their quota must take it); you stay an admin of it."""
    from ttcli.session import client

    output.json_mode(as_json)
    with client() as tt:
        found = tt.envs.find(env)
        after = tt.envs.transfer(found, owner)
    if as_json:
        output.emit_json(after)
    else:
        output.say(f"Env {after['name']} now belongs to {after['owner']}")
