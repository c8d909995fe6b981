"""The `detail` of some verbs: small, and never a secret, user data or an output."""

from __future__ import annotations

import hashlib
import json
import posixpath


def exec_command(kwargs, result) -> dict:
    """A command run in a guest: its program (argv[0], the base name) and a digest of the
    whole command line, never the line itself: its arguments may hold a password or a
    token (`mysql -pSECRET`, `curl -H 'Authorization: ...'`). The digest lets an operator
    match a command they know of ("was `rm -rf /data` run?") without the log disclosing
    any they do not."""
    command = kwargs.get("command")
    argv = [str(a) for a in command] if isinstance(command, list | tuple) else str(command or "").split()
    digest = hashlib.sha256(json.dumps(argv).encode()).hexdigest()
    return {"program": posixpath.basename(argv[0])[:100] if argv else "", "command_sha256": digest,
            "args": len(argv)}


def guest_path(kwargs, result) -> dict:
    """A file copied to or from a guest: its path (never its contents) and, for an upload,
    its declared size."""
    found = {"path": str(kwargs.get("path") or "")[:300]}
    if isinstance(kwargs.get("size"), int):
        found["size"] = kwargs["size"]
    return found


def console_target(kwargs, result):
    """A console opened (or refused): the VM, from the guest target or by its id."""
    from audit.recording import Ref

    if result is not None:
        return result.vm
    return Ref("vm", str(kwargs.get("vm_id") or ""))


def other_env(kwargs, result) -> dict:
    other = kwargs.get("other")
    found = {"other_env": getattr(other, "pk", None)}
    if result is not None and (getattr(result, "params", None) or {}).get("asked"):
        found["asked"] = True
    return found


def member(kwargs, result) -> dict:
    """A sharing change: whom (a username, or @group) and the role given (none: removed)."""
    found = kwargs.get("member")
    user, group = kwargs.get("user") or getattr(found, "user", None), kwargs.get("group") or getattr(
        found, "group", None)
    # Given as a model, or by name as typed (then looked up by the service).
    if user is not None:
        who = user if isinstance(user, str) else user.get_username()
    elif group is not None:
        who = f"@{group if isinstance(group, str) else group.name}"
    else:
        who = ""
    role = kwargs.get("role")
    return {"member": who[:160], **({"role": str(role)[:16]} if role is not None else {})}


def new_owner(kwargs, result) -> dict:
    """An Env given away: to whom."""
    owner = kwargs.get("new_owner")
    if owner is None or isinstance(owner, str):  # by name as typed (then looked up by the service)
        return {"new_owner": owner or ""}
    return {"new_owner": owner.get_username()}
