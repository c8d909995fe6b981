"""django-q2 entry points of envs: thin, take ids, call a service."""

from __future__ import annotations


def expire_envs() -> int:
    from envs.services import env_expire_due

    return len(env_expire_due())
