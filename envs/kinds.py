"""The operation kinds of envs: registered with operations (envs/apps.py)."""

from __future__ import annotations

from django.db.models import TextChoices


class EnvKind(TextChoices):
    ENV_CREATE = "env_create", "Create Env"
    ENV_EXTEND = "env_extend", "Extend Env"
    ENV_START = "env_start", "Start Env"
    ENV_STOP = "env_stop", "Stop Env"
    ENV_DENY_OUTGOING = "env_set_deny_outgoing", "Set outgoing traffic"
    ENV_DESTROY = "env_destroy", "Destroy Env"
    ENV_EXPIRE = "env_expire", "Expire Env"
    ENV_PEER = "env_peer", "Peer with an Env"
    ENV_UNPEER = "env_unpeer", "End a peering"
    ENV_CLONE = "env_clone", "Clone Env"
    ENV_SLEEP = "env_sleep", "Sleep (idle)"
    ENV_WAKE = "env_wake", "Wake (a connection)"


def register() -> None:
    from operations import registry

    registry.register_kinds(EnvKind, tags={
        # The site's own: no requester, no cap.
        registry.UNCAPPED: {EnvKind.ENV_DESTROY, EnvKind.ENV_SLEEP, EnvKind.ENV_WAKE},
        registry.CREATES_VMS: {EnvKind.ENV_CREATE},
        registry.DESTROYS_ENV: {EnvKind.ENV_DESTROY, EnvKind.ENV_EXPIRE},
    })
