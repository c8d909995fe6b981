"""One world for every test of a module: built once, rolled back at the module's end.

Building a world through the real runner (an Env of VMs started, stopped, snapshotted)
costs far more than a request against it, and the matrices make hundreds of requests
against the same world. So a module builds it once, inside a transaction of its own
that stays open until the module ends. Each test's own transaction (pytest-django's
`db`) is then a savepoint inside it, rolled back when the test ends: whatever a test
writes, the next test sees the world exactly as it was built. At the module's end the
outer transaction is rolled back too, and no row outlives the module.

What a test does outside the database is not rolled back, so a module sharing a world
only makes requests whose work stays in the database: an action is recorded and its
task queued, but the task runs on commit, and nothing commits. The VMs' domains on
libvirt's test driver stay for the whole module (the module replaces the per-test
`_clean_test_driver` with one that keeps them) and are cleaned at its end.

A module takes its fixtures from `module_world` (tests/test_api_matrix.py):

    shared, world, alice, _clean_test_driver = module_world(build_full_world, "world", "alice")

`shared` builds the world once; `world` and `alice` give each test its own deep copy of
the shared objects, as Django's setUpTestData does; `_clean_test_driver` replaces the
per-test clean-up so the world's domains stay on the test driver until the module ends.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction
from django.test import TestCase, override_settings

from nodes.models import Node
from nodes.registry import forget_engines
from tests.conftest import clean_test_driver, env_maker, make_node, make_template, make_user
from vms.models import VmTemplate


@dataclass
class Shared:
    """What the module's tests share: alice's world on the test node, and what it was made of."""

    node: Node
    template: VmTemplate
    alice: Any
    world: Any


def _run_tasks():
    """run_tasks at module scope: the tasks enqueued inside the block run at its end."""
    return TestCase.captureOnCommitCallbacks(execute=True)


@contextlib.contextmanager
def world_for_the_module(django_db_blocker, build: Callable[..., Any]) -> Iterator[Shared]:
    """`build(alice, make_env, run_tasks)` once, in a transaction rolled back when the block ends.

    The settings the per-test fixtures give (tasks run inline, no management cooldown, a
    fast password hasher) are in force while it builds."""
    forget_engines()
    with django_db_blocker.unblock():
        outer = transaction.atomic()
        outer.__enter__()
    try:
        with django_db_blocker.unblock(), override_settings(
            Q_CLUSTER={**settings.Q_CLUSTER, "sync": True}, TT_MGMT_COOLDOWN=0,
            PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        ):
            node = make_node()
            template = make_template(node)
            alice = make_user("alice")
            world = build(alice, env_maker(template, _run_tasks), _run_tasks)
        yield Shared(node=node, template=template, alice=alice, world=world)
    finally:
        with django_db_blocker.unblock():
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)
        clean_test_driver()


def module_world(build: Callable[..., Any], *copied: str) -> tuple:
    """The fixtures of a module whose tests share one world built by `build`: `shared`,
    then one fixture per name in `copied` (a deep copy of that attribute of Shared for
    each test), then `_clean_test_driver`. Assign them to module names of the same names."""

    @pytest.fixture(scope="module")
    def shared(django_db_setup, django_db_blocker):
        with world_for_the_module(django_db_blocker, build) as built:
            yield built

    def copy_of(name: str):
        @pytest.fixture(name=name)
        def fixture(shared, db):
            return copy.deepcopy(getattr(shared, name))

        return fixture

    @pytest.fixture
    def _clean_test_driver():
        """The world's domains stay on libvirt's test driver until the module ends."""

    return (shared, *(copy_of(name) for name in copied), _clean_test_driver)
