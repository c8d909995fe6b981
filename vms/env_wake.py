"""Waking a VM's Env. An Env sleeps when idle (envs/sleep.py, above vms): starting one of its
VMs, or going into one (console, exec, files), wakes the whole Env, so that its ports lead to
its VMs again. vms may not import envs, so envs hands its wake service here when it is ready
(envs/apps.py), as vms hands accounts its usage counter."""

from __future__ import annotations

from collections.abc import Callable

_waker: Callable | None = None


def register(wake: Callable) -> None:
    """`wake(env_id, *, why, by=None)`: the wake operation, or None when the Env is awake."""
    global _waker
    _waker = wake


def wake_env(env_id: int, *, why: str, by=None):
    if _waker is None:  # envs is an installed app: its ready() has run before any request
        raise RuntimeError("no Env waker is registered (envs.apps.EnvsConfig.ready)")
    return _waker(env_id, why=why, by=by)
