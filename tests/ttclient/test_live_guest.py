"""ttclient's exec and files against the real API (pytest-django's live server), the guest
behind it the fake of tests/vms/guest_support.py: the wire as the server speaks it, not as
a fake server of ttclient's tests says it."""

from __future__ import annotations

import pytest

from accounts.services import token_create
from tests.vms.guest_support import FakeGuest, install, with_ways_in
from ttclient import Client

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_file_from_disk_goes_up_and_comes_back_and_a_command_streams(
        live_server, alice, template, make_env, monkeypatch, tmp_path):
    with_ways_in(template)
    guest = install(monkeypatch, FakeGuest())
    vm = make_env(alice).vms.get()
    _token, secret = token_create(user=alice, name="sdk")
    local = tmp_path / "data.bin"
    local.write_bytes(b"0123456789" * 50_000)
    with Client(live_server.url, secret) as tt, local.open("rb") as handle:
        tt.files.put(vm.pk, "/srv/data.bin", handle, mode=0o600)
        assert guest.files["/srv/data.bin"] == local.read_bytes() and guest.modes["/srv/data.bin"] == 0o600
        assert tt.files.read(vm.pk, "/srv/data.bin") == local.read_bytes()
        events = list(tt.exec.stream(vm.pk, ["echo", "hello"]))
    assert [(e.kind, e.text) for e in events[:-1]] == [("stdout", "hello\n")]
    assert events[-1].kind == "exit" and events[-1].result["exit_code"] == 0
