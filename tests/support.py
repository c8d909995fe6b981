"""Helpers shared by the test modules: the instant the clock is frozen at, waiting
for an operation, what libvirt's in-process test driver holds, taking a snapshot,
a refusal that writes nothing, and a service that loses a race to the database.

Fixtures live in tests/conftest.py (`frozen_clock` stops time at T0); this module
holds plain constants and functions that test modules import by name.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import libvirt
import pytest
from django.db import connection, transaction

from engines.libvirt.connection import get_connection
from envs.models import Env
from operations.models import Operation
from vms.models import Snapshot, Vm
from vms.services import snapshot_create

TEST_URI = "test:///default"
TEST_POOL = "tt-pool"  # the pool the node's engine creates on the test driver
TEMPLATE_VOLUME = "tt-test-template.qcow2"
T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def done(op: Operation) -> Operation:
    """The operation as it ended (its task ran inline, under run_tasks)."""
    op.refresh_from_db()
    assert op.is_done, op.status
    return op


def held_by_a_live_worker(op: Operation, now: datetime) -> Operation:
    """The operation as a healthy worker on another host holds it: running, lease renewed at `now`."""
    Operation.objects.filter(pk=op.pk).update(
        status="running", attempt=1, worker="elsewhere:4242/0000.0.0", heartbeat_at=now, started_at=now
    )
    op.refresh_from_db()
    return op


# --- what libvirt's test driver holds ------------------------------------------------


def domain(vm: Vm) -> libvirt.virDomain:
    """The libvirt domain behind `vm` (libvirtError if there is none)."""
    return get_connection(TEST_URI).lookupByName(vm.engine_name)


def domain_state(vm: Vm) -> str:
    """"running", "stopped" or "missing", as libvirt reports the VM's domain."""
    try:
        dom = domain(vm)
    except libvirt.libvirtError:
        return "missing"
    return "running" if dom.isActive() else "stopped"


def domain_names() -> set[str]:
    """The names of the domains the tests made (they start with "tt-")."""
    return {d.name() for d in get_connection(TEST_URI).listAllDomains() if d.name().startswith("tt-")}


def libvirt_snapshots(vm: Vm) -> set[str]:
    return set(domain(vm).snapshotListNames())


def tt_volumes() -> set[str]:
    """The VM images in the node's pool (everything but the template)."""
    pool = get_connection(TEST_URI).storagePoolLookupByName(TEST_POOL)
    return {v.name() for v in pool.listAllVolumes() if v.name() != TEMPLATE_VOLUME}


# --- doing and refusing --------------------------------------------------------------


def take_snapshot(vm: Vm, run_tasks, name: str = "s1", *, by=None, **kwargs) -> Snapshot:
    """Snapshot `vm` (as its owner unless `by` is given) and wait until it is ready."""
    with run_tasks():
        op = snapshot_create(vm=vm, by=by or vm.env.owner, name=name, **kwargs)
    assert done(op).status == "succeeded", op.error_message
    return Snapshot.objects.get(vm=vm, name=name)


@contextlib.contextmanager
def refused(db_state: Callable[[], dict], error: type[Exception]) -> Iterator[pytest.ExceptionInfo]:
    """The block raises `error` and leaves every row as it was:

        with refused(db_state, InvalidInput) as caught:
            vm_add(...)
        assert caught.value.field == "template"
    """
    before = db_state()
    with pytest.raises(error) as caught:
        yield caught
    assert db_state() == before


# What every interface says when the database caught a race (ttportal.refusals).
RETRY = "conflicts with a concurrent change; retry the request"


def lose_a_race(**_service_args):
    """A stand-in for any service that loses a race only the database sees: it writes,
    then a unique constraint refuses its next row (a real IntegrityError, as when a
    concurrent request took the name first), and its atomic block rolls both back."""
    with transaction.atomic():
        env = Env.objects.first() or pytest.fail("lose_a_race needs an Env to clash with")
        Env.objects.filter(pk=env.pk).update(is_stopped=not env.is_stopped)
        Env.objects.create(owner=env.owner, name=env.name, start_at=env.start_at, end_at=env.end_at)


def public_key_line(kind: str = "ed25519", comment: str = "alice@laptop", bits: int = 2048) -> str:
    """A fresh OpenSSH public key line, as a .pub file holds it (made here, never a fixture
    file, so no test shares a key by accident)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    private = {
        "ed25519": ed25519.Ed25519PrivateKey.generate,
        "ecdsa": lambda: ec.generate_private_key(ec.SECP256R1()),
        "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=bits),
    }[kind]()
    line = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return f"{line.decode()} {comment}".rstrip() + "\n"


def no_guest_agent(monkeypatch) -> None:
    """The test driver pretends every guest runs an agent that freezes its filesystems; make
    it answer as a guest without one does, so a snapshot takes the stopped path."""
    import libvirt

    def not_connected(dom, *args):
        raise libvirt.libvirtError("Guest agent is not responding: QEMU guest agent is not connected")

    monkeypatch.setattr(libvirt.virDomain, "fsFreeze", not_connected)


def all_at_once(n: int, request: Callable[[int], str]) -> list[str]:
    """`request(i)` for i in 0..n-1, each in its own thread (and database connection), all
    released together by a barrier: what each returned, or the exception it raised, named
    and shown whole (a failure of the test, not an outcome)."""
    start = threading.Barrier(n)
    outcomes = [""] * n

    def run(i: int) -> None:
        try:
            start.wait()
            outcomes[i] = request(i)
        except Exception as exc:
            outcomes[i] = f"{exc.__class__.__name__}: {exc}"
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes
