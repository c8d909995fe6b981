"""Who may act on what is not their own: the one table of actions and the Django model
permission each takes, and the one decision (`check`) every interface reaches.

An Env's owner acts on their own Envs, VMs and snapshots with no permission at all; a
member of the Env (envs.EnvMember: a user, or one of their groups) does what their role
holds (ROLE_ACTIONS); anyone else only as active staff holding the action's permission. Superusers hold every
permission (Django's has_perm). `is_staff` alone grants nothing but the admin's door.
vms.policy applies this to Envs (check_can_manage); the querysets' visible_to use
`sees_others`. This module imports nothing of the project's models, so every app may.
"""

from __future__ import annotations

from ttportal.errors import Forbidden

# Every action on someone else's objects, or on the platform, and the Django permission
# it takes. Owners need none for their own Envs (VMs, snapshots): only the left-hand
# actions marked "platform" below are refused to everyone without the permission.
ACTIONS: dict[str, str] = {
    # Envs of another user
    "env_view": "envs.view_env",               # lists, detail pages, the Env's operations page
    "env_create": "envs.add_env",              # create an Env owned by another user
    "env_extend": "envs.change_env",
    "env_start": "envs.change_env",
    "env_stop": "envs.change_env",
    "env_set_deny_outgoing": "envs.change_env",
    "env_peer": "envs.change_env",
    "env_unpeer": "envs.change_env",
    "env_set_idle_suspend": "envs.change_env",
    "env_clone": "envs.view_env",              # clone it into Envs of one's own (staff: as today)
    "env_share": "envs.change_env",            # grant, change or remove a member's role
    "env_transfer": "envs.change_env",         # give the Env to one of its members
    "env_destroy": "envs.delete_env",
    # VMs of another user's Env
    "vm_view": "vms.view_vm",
    "vm_add": "vms.add_vm",
    "vm_start": "vms.change_vm",
    "vm_stop": "vms.change_vm",
    "vm_suspend": "vms.change_vm",
    "vm_set_blacklist": "vms.change_vm",
    "vm_set_ports": "vms.change_vm",
    "vm_destroy": "vms.delete_vm",
    "vm_exec": "vms.exec_vm",                  # run a command in it (vms/guest_access.py)
    "vm_files": "vms.files_vm",                # copy files in and out, list its directories
    "vm_console": "vms.console_vm",            # its interactive console (watch and type)
    "vm_console_view": "vms.console_vm",       # watch its console only (a viewer member)
    # snapshots of another user's VM
    "snapshot_view": "vms.view_snapshot",
    "snapshot_create": "vms.add_snapshot",
    "snapshot_apply": "vms.change_snapshot",
    "snapshot_destroy": "vms.delete_snapshot",
    # operations (the audit record) of another user's Envs
    "operation_view": "operations.view_operation",
    # blueprints (saved Env files) of another user: sharees and everyone (published) only read them
    "blueprint_view": "envs.view_blueprint",
    "blueprint_change": "envs.change_blueprint",   # edit its name, description, file
    "blueprint_share": "envs.change_blueprint",
    "blueprint_delete": "envs.delete_blueprint",
    # platform: nobody's own, operators only
    "audit_view": "audit.view_auditevent",     # the whole audit log (owners read their Envs' events)
    "blueprint_publish": "envs.publish_blueprint",  # publish a blueprint to everyone (or withdraw it)
    "ignore_quota": "accounts.change_userquota",  # act past an owner's quota
    "operation_retry": "operations.change_operation",
    "operation_fail": "operations.change_operation",
    "warm_pool_save": "vms.change_warmpool",
    "warm_pool_delete": "vms.delete_warmpool",
    "warm_pool_tend": "vms.change_warmpool",
    "template_view_all": "vms.view_vmtemplate",  # templates no node can run, too
    "node_view": "nodes.view_node",            # /readyz's and /metrics' details
    "node_reconcile": "nodes.change_node",
    "node_drain": "nodes.change_node",
    "node_undrain": "nodes.change_node",
}


# The roles an Env's owner grants a user or a group on one Env (envs.EnvMember), each with
# the actions it takes on that Env, its VMs and snapshots without any Django permission.
# Each role holds every action of the roles before it. Nobody but the owner (or staff with
# the permission) transfers an Env: no role holds env_transfer.
VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
_VIEWER_ACTIONS = frozenset({
    "env_view", "vm_view", "snapshot_view", "operation_view", "vm_console_view",
})
_OPERATOR_ACTIONS = _VIEWER_ACTIONS | {
    "env_start", "env_stop", "env_extend", "env_set_idle_suspend",
    "vm_start", "vm_stop", "vm_suspend", "vm_exec", "vm_files", "vm_console",
    "snapshot_create", "snapshot_apply", "snapshot_destroy",
}
_ADMIN_ACTIONS = _OPERATOR_ACTIONS | {
    "vm_add", "vm_destroy", "vm_set_ports", "vm_set_blacklist", "env_set_deny_outgoing",
    "env_peer", "env_unpeer", "env_share", "env_clone", "env_destroy",
}
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    VIEWER: _VIEWER_ACTIONS, OPERATOR: frozenset(_OPERATOR_ACTIONS), ADMIN: frozenset(_ADMIN_ACTIONS),
}
ROLES: tuple[str, ...] = (VIEWER, OPERATOR, ADMIN)  # weakest first


def strongest(roles) -> str | None:
    """The strongest of `roles` (a user's own and their groups'), None when none."""
    ranked = [ROLES.index(role) for role in roles if role in ROLES]
    return ROLES[max(ranked)] if ranked else None


def role_allows(role: str | None, action: str) -> bool:
    return role is not None and action in ROLE_ACTIONS.get(role, ())


def permission_for(action: str) -> str:
    try:
        return ACTIONS[action]
    except KeyError:  # a typo must not turn into "allowed"
        raise ValueError(f"no permission is mapped to {action!r} (ttportal.permissions.ACTIONS)") from None


def may(user, action: str) -> bool:
    """Whether `user` may take `action` on objects not their own (or on the platform):
    active staff holding the action's permission."""
    perm = permission_for(action)
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff
                and user.has_perm(perm))


def check(user, action: str, *, owner_id: int | None = None, what: str = "Env",
          role: str | None = None) -> None:
    """The one decision: the owner (`owner_id`) may; a member may what their `role` on the
    Env holds (ROLE_ACTIONS); anyone else needs the permission. `user` None is the system
    itself (expiry sweeps, recovery)."""
    if user is None:
        return
    if not user.is_authenticated or not user.is_active:
        raise Forbidden("sign in first")
    if owner_id is not None and owner_id == user.pk:
        return
    if role_allows(role, action):
        return
    if may(user, action):
        return
    if role is not None:
        raise Forbidden(f"your role on this {what} is {role}: {action} takes a stronger role "
                        f"({' or '.join(r for r in ROLES if role_allows(r, action)) or 'the owner'})"
                        f" or the permission {permission_for(action)}")
    whose = f"you do not own this {what} and " if owner_id is not None else ""
    raise Forbidden(f"{whose}{action} needs the permission {permission_for(action)}")


def check_staff(user, action: str) -> None:
    """Operators only (actions on the platform rather than on one's own Envs)."""
    if user is None or not user.is_authenticated:
        raise Forbidden("only staff may do this")
    check(user, action)


def sees_others(user, action: str) -> bool:
    """For the querysets' visible_to: whether `user` sees other users' objects of a kind."""
    return may(user, action)
