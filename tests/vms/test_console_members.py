"""The live console of a shared Env's VM (vms/consumers.py, vms/console.py): a viewer member
watches and may not type nor take control; an operator types; and a member removed or
demoted loses it at once, on the console already open: told by the unshare itself (the
channel layer's group), or, when the membership went another way (a group's member taken
out of it in the admin), on their next keystroke."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.contrib.auth.models import Group
from django.test import TestCase

from envs import sharing
from envs.models import EnvMember
from tests.conftest import make_user
from tests.vms.test_console import (  # noqa: F401  (fake_console: the autouse fixture)
    FakeConsole,
    closed_code,
    communicator,
    fake_console,
    receive_json,
    receive_until,
    session_headers,
)
from vms import consumers
from vms.models import Vm


@pytest.fixture
def vm(make_env, alice) -> Vm:
    vm = make_env(alice).vms.get()
    assert vm.status == Vm.Status.RUNNING
    return vm


def share(vm, role: str, *, via_group: bool = False):
    user = make_user(f"m-{role}")
    if via_group:
        group = Group.objects.create(name="team")
        user.groups.add(group)
        member = EnvMember.objects.create(env=vm.env, group=group, role=role)
    else:
        member = EnvMember.objects.create(env=vm.env, user=user, role=role)
    return user, member


def test_a_viewer_watches_and_may_neither_type_nor_take_control(vm, alice):
    viewer, _ = share(vm, "viewer")
    h_alice, h_viewer = session_headers(alice), session_headers(viewer)

    async def scenario():
        owner = communicator(vm, h_alice)
        await owner.connect()
        await receive_json(owner, "status")
        watcher = communicator(vm, h_viewer)
        assert (await watcher.connect())[0]
        assert (await receive_json(watcher, "status"))["role"] == "watcher"
        await owner.send_to(bytes_data=b"echo $((6*7))\r")
        assert b"42" in await receive_until(watcher, b"42")  # output: yes

        await watcher.send_to(bytes_data=b"reboot\r")
        assert (await receive_json(watcher, "refused"))["message"] == consumers.WATCH_ONLY
        await watcher.send_to(text_data=json.dumps({"type": "take"}))
        assert (await receive_json(watcher, "refused"))["message"] == consumers.WATCH_ONLY
        await watcher.disconnect()
        await owner.disconnect()

    async_to_sync(scenario)()
    assert b"reboot" not in FakeConsole.opened[0].typed


def test_a_viewer_alone_is_no_writer(vm):
    viewer, _ = share(vm, "viewer")
    headers = session_headers(viewer)

    async def scenario():
        watcher = communicator(vm, headers)
        assert (await watcher.connect())[0]
        status = await receive_json(watcher, "status")
        assert (status["role"], status["writer"]) == ("watcher", None)
        await watcher.disconnect()

    async_to_sync(scenario)()


def test_an_operator_through_a_group_types(vm):
    operator, _ = share(vm, "operator", via_group=True)
    headers = session_headers(operator)

    async def scenario():
        comm = communicator(vm, headers)
        assert (await comm.connect())[0]
        assert (await receive_json(comm, "status"))["role"] == "writer"
        await comm.send_to(text_data=json.dumps({"type": "input", "data": "echo $((6*7))\r"}))
        assert b"42" in await receive_until(comm, b"42\r\n")
        await comm.disconnect()

    async_to_sync(scenario)()


def test_unsharing_closes_the_members_open_console_at_once(vm, alice):
    operator, member = share(vm, "operator")
    h_operator = session_headers(operator)

    def unshare():
        with TestCase.captureOnCommitCallbacks(execute=True):  # the test's transaction never commits
            sharing.env_unshare(member=member, by=alice)

    async def scenario():
        comm = communicator(vm, h_operator)
        assert (await comm.connect())[0]
        await receive_json(comm, "status")
        await database_sync_to_async(unshare)()
        ended = await receive_json(comm, "ended")  # no keystroke needed: the unshare told it
        assert ended["message"] == "your access to this VM was removed"
        assert await closed_code(comm) == 1000

    async_to_sync(scenario)()
    assert FakeConsole.opened[0].typed == b""


def test_a_demoted_member_stops_typing_at_once(vm, alice):
    operator, member = share(vm, "operator")
    h_operator = session_headers(operator)

    def demote():
        with TestCase.captureOnCommitCallbacks(execute=True):
            sharing.env_member_set_role(member=member, role="viewer", by=alice)

    async def scenario():
        comm = communicator(vm, h_operator)
        await comm.connect()
        assert (await receive_json(comm, "status"))["role"] == "writer"
        await database_sync_to_async(demote)()
        assert (await receive_json(comm, "status"))["role"] == "watcher"  # the hub let go of them
        await comm.send_to(bytes_data=b"reboot\r")
        assert (await receive_json(comm, "refused"))["message"] == consumers.WATCH_ONLY
        await comm.disconnect()

    async_to_sync(scenario)()
    assert b"reboot" not in FakeConsole.opened[0].typed


def test_a_member_taken_out_of_the_group_loses_the_console_on_the_next_keystroke(vm):
    operator, _ = share(vm, "operator", via_group=True)
    h_operator = session_headers(operator)

    async def scenario():
        comm = communicator(vm, h_operator)
        await comm.connect()
        assert (await receive_json(comm, "status"))["role"] == "writer"
        # Not through envs.sharing (the admin's group page): nobody tells the console.
        await database_sync_to_async(lambda: operator.groups.clear())()
        await comm.send_to(bytes_data=b"reboot\r")
        assert (await receive_json(comm, "ended"))["message"] == "your access to this VM was removed"

    async_to_sync(scenario)()
    assert b"reboot" not in FakeConsole.opened[0].typed


def test_a_user_in_no_role_is_refused(vm):
    headers = session_headers(make_user("carol"))

    async def scenario():
        comm = communicator(vm, headers)
        assert (await comm.connect())[0]
        assert (await receive_json(comm, "error"))["code"] == "forbidden"
        assert await closed_code(comm) == 4403

    async_to_sync(scenario)()
