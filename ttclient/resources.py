"""The API's collections: Envs, VMs, snapshots, operations, SSH keys, templates.

Each method is one request (wait() polls). A long action answers its Operation (202); one
that asks for what already is (start a running Env) answers None: nothing was done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ttclient.errors import ApiError, OperationFailed, WaitTimeout
from ttclient.types import Env, Operation, Snapshot, SshKey, Vm

if TYPE_CHECKING:
    from ttclient.client import Client

ProgressCallback = Callable[[Operation], None]


class Resource:
    def __init__(self, client: Client):
        self.client = client


def _operation(status: int, body: Any) -> Operation | None:
    """A long action's answer: its Operation (202), or None when it had nothing to do (200)."""
    return body if status == 202 else None


def _id(thing: int | dict) -> int:
    return thing if isinstance(thing, int) else int(thing["id"])


class Envs(Resource):
    def list(self, *, live: bool | None = True, name: str | None = None,
             owner: str | None = None) -> list[Env]:
        """Envs you can see (staff: every Env); by default the live ones (not destroyed)."""
        live_param = None if live is None else ("true" if live else "false")
        return list(self.client.list("/api/envs/", live=live_param, name=name, owner=owner))

    def get(self, env: int | dict) -> Env:
        return self.client.get(f"/api/envs/{_id(env)}/")

    def find(self, ref: str | int) -> Env:
        """An Env by id, by name (a live Env of yours, or the only live one of that name you
        can see) or by owner/name; ApiError 404 if none."""
        if isinstance(ref, int) or str(ref).isdigit():
            return self.get(int(ref))
        owner, _, name = str(ref).rpartition("/")
        found = [e for e in self.list(name=name, owner=owner or None) if e["name"] == name]
        if len(found) > 1:
            raise ApiError(400, "ambiguous", f"{len(found)} live Envs are named {name}: "
                           "name one as owner/name", "env")
        if not found:
            raise ApiError(404, "not_found", f"no live Env named {ref}", "env")
        return found[0]

    def create(self, name: str, vms: list[dict], *, lifetime: int | None = None, end_at: str | None = None,
               deny_outgoing: bool = False, owner: str | None = None,
               idle_suspend: int | None = None) -> Operation:
        """Create an Env with its VMs (each a dict as POST /api/envs/ takes them:
        name, template, cpu_num, mem_mb, disk_mb, ports, net_kind, user_data…)."""
        body: dict[str, Any] = {"name": name, "vms": vms, "deny_outgoing": deny_outgoing}
        for key, value in (("lifetime", lifetime), ("end_at", end_at), ("owner", owner),
                           ("idle_suspend", idle_suspend)):
            if value is not None:
                body[key] = value
        return self.create_from_body(body)

    def create_from_body(self, body: dict) -> Operation:
        """Create an Env from a whole POST /api/envs/ body (as envfile.EnvFile.to_create_body()
        makes it)."""
        return self.client.post("/api/envs/", body)[1]

    def create_from_envfile(self, text: str | bytes) -> Operation:
        """Create the Env an Env file (tt.yaml) describes: the server parses it, so every
        client reads the format alike. `@file` user_data must be inlined first
        (envfile.EnvFile.document() does it)."""
        content = text.encode() if isinstance(text, str) else text
        # YAML is a superset of JSON: a document written with json.dumps is a file too.
        response = self.client.request("POST", "/api/envs/", params={"format": "envfile"}, content=content,
                                       headers={"Content-Type": "application/yaml"})
        return response.json()

    def envfile(self, env: int | dict) -> str:
        """The Env as an Env file (YAML), to keep or to make it again."""
        return self.client.request("GET", f"/api/envs/{_id(env)}/envfile/",
                                   headers={"Accept": "application/yaml, text/yaml, */*"}).text

    def delete(self, env: int | dict) -> Operation:
        """Destroy the Env and all its VMs."""
        return self.client.post(f"/api/envs/{_id(env)}/destroy/")[1]

    def extend(self, env: int | dict, *, lifetime: int | None = None, end_at: str | None = None) -> Operation:
        """Move the Env's end: `lifetime` seconds from now, or to `end_at` (RFC 3339)."""
        body = {"lifetime": lifetime} if lifetime is not None else {"end_at": end_at}
        return self.client.post(f"/api/envs/{_id(env)}/extend/", body)[1]

    def clone(self, env: int | dict, *, count: int = 1, name: str | None = None,
              lifetime: int | None = None) -> Operation:
        """`count` new Envs whose VMs start from this Env's disks as they are now (it keeps
        running). The operation is on the source Env; `params["envs"]` lists the clones' ids."""
        body: dict[str, Any] = {"count": count}
        if name is not None:
            body["name"] = name
        if lifetime is not None:
            body["lifetime"] = lifetime
        return self.client.post(f"/api/envs/{_id(env)}/clone/", body)[1]

    def start(self, env: int | dict) -> Operation | None:
        return _operation(*self.client.post(f"/api/envs/{_id(env)}/start/"))

    def stop(self, env: int | dict) -> Operation | None:
        return _operation(*self.client.post(f"/api/envs/{_id(env)}/stop/"))

    # --- sharing (docs/guide/sharing.md) ---------------------------------------------------------

    def members(self, env: int | dict) -> list[dict]:
        """The users and groups the Env is shared with, each with its role."""
        return self.client.get(f"/api/envs/{_id(env)}/members/")

    def share(self, env: int | dict, *, role: str, user: str | None = None, group: str | None = None) -> dict:
        """Share the Env with a user or a group (by name) as viewer, operator or admin; the member."""
        body = {"user": user} if user is not None else {"group": group}
        return self.client.post(f"/api/envs/{_id(env)}/members/", {**body, "role": role})[1]

    def set_role(self, env: int | dict, member: int | dict, role: str) -> dict:
        return self.client.request("PATCH", f"/api/envs/{_id(env)}/members/{_id(member)}/",
                                   json={"role": role}).json()

    def unshare(self, env: int | dict, member: int | dict) -> None:
        self.client.request("DELETE", f"/api/envs/{_id(env)}/members/{_id(member)}/")

    def member(self, env: int | dict, who: str) -> dict:
        """The member `who`: a username, or @group."""
        for row in self.members(env):
            if (who.startswith("@") and row["group"] == who[1:]) or row["user"] == who:
                return row
        raise ApiError(404, "not_found", f"the Env is not shared with {who}", "member")

    def transfer(self, env: int | dict, owner: str) -> Env:
        """Give the Env to `owner`, one of its members (the new owner's quota must take it)."""
        return self.client.post(f"/api/envs/{_id(env)}/transfer/", {"owner": owner})[1]


class Vms(Resource):
    def list(self, *, env: int | None = None, live: bool | None = True) -> list[Vm]:
        live_param = None if live is None else ("true" if live else "false")
        return list(self.client.list("/api/vms/", env=env, live=live_param, ordering="name"))

    def get(self, vm: int | dict) -> Vm:
        return self.client.get(f"/api/vms/{_id(vm)}/")

    def find(self, env: Env, name: str) -> Vm:
        """The live VM `name` of `env` (a name, or an id)."""
        for brief in env["vms"]:
            if brief["name"] == name or str(brief["id"]) == name:
                return self.get(brief["id"])
        names = ", ".join(v["name"] for v in env["vms"]) or "none"
        raise ApiError(404, "not_found", f"Env {env['name']} has no VM {name} (its VMs: {names})", "vm")

    def start(self, vm: int | dict) -> Operation | None:
        return _operation(*self.client.post(f"/api/vms/{_id(vm)}/start/"))

    def stop(self, vm: int | dict) -> Operation | None:
        return _operation(*self.client.post(f"/api/vms/{_id(vm)}/stop/"))

    def delete(self, vm: int | dict) -> Operation:
        return self.client.post(f"/api/vms/{_id(vm)}/destroy/")[1]

    def snapshot(self, vm: int | dict, name: str, *, life_time: int | None = None) -> Operation:
        """Snapshot the VM (stopped for consistency, then put back as it was)."""
        body: dict[str, Any] = {"name": name}
        if life_time is not None:
            body["life_time"] = life_time
        return self.client.post(f"/api/vms/{_id(vm)}/snapshots/", body)[1]


class Snapshots(Resource):
    def list(self, *, env: int | None = None, vm: int | None = None) -> list[Snapshot]:
        return list(self.client.list("/api/snapshots/", env=env, vm=vm, ordering="created_at"))

    def get(self, snapshot: int | dict) -> Snapshot:
        return self.client.get(f"/api/snapshots/{_id(snapshot)}/")

    def apply(self, snapshot: int | dict) -> Operation:
        """Put the VM back to the snapshot."""
        return self.client.post(f"/api/snapshots/{_id(snapshot)}/apply/")[1]

    def delete(self, snapshot: int | dict) -> Operation:
        return self.client.post(f"/api/snapshots/{_id(snapshot)}/destroy/")[1]


class Operations(Resource):
    def list(self, *, env: int | None = None, status: str | None = None, limit: int = 50) -> list[Operation]:
        """The newest operations on Envs you can see (at most `limit`)."""
        page = self.client.get("/api/operations/", **{k: v for k, v in
                                                      (("env", env), ("status", status)) if v is not None},
                               page_size=max(1, min(limit, 200)), ordering="-created_at")
        return page["results"][:limit]

    def get(self, op: int | dict) -> Operation:
        return self.client.get(f"/api/operations/{_id(op)}/")

    def wait(self, op: int | dict, on_progress: ProgressCallback | None = None, *,
             timeout: float | None = None, interval: float = 0.25, max_interval: float = 2.0) -> Operation:
        """Poll the operation until it is done: its final state if it succeeded, else
        OperationFailed; WaitTimeout past `timeout` seconds (the work goes on on the server).
        `on_progress(op)` is called with each state read."""
        deadline = None if timeout is None else time.monotonic() + timeout
        current: Operation = op if isinstance(op, dict) and "is_done" in op else self.get(op)
        while True:
            if on_progress is not None:
                on_progress(current)
            if current["is_done"]:
                if current["status"] != "succeeded":
                    raise OperationFailed(current)
                return current
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"operation {current['id']} ({current['kind']}) still {current['status']} "
                                  f"at {current['progress']}% after {timeout:g} s")
            pause = interval if deadline is None else min(interval, max(deadline - time.monotonic(), 0.0))
            time.sleep(pause)
            interval = min(interval * 1.5, max_interval)
            current = self.get(current)


class Keys(Resource):
    def list(self) -> list[SshKey]:
        return list(self.client.list("/api/keys/"))

    def add(self, public_key: str, *, name: str | None = None) -> SshKey:
        """Add an SSH public key (one line of a .pub file): VMs made from now on get it."""
        body = {"public_key": public_key.strip()}
        if name:
            body["name"] = name
        return self.client.request("POST", "/api/keys/", json=body).json()

    def delete(self, key: int | dict) -> None:
        self.client.request("DELETE", f"/api/keys/{_id(key)}/")


class Templates(Resource):
    def list(self) -> list[dict]:
        return list(self.client.list("/api/templates/"))
