"""MAC/IP and public-port allocation: unique by database constraint, retried on a race.

The threaded tests run real concurrent transactions (one connection per thread),
so they need `transaction=True`; they pass on SQLite (a file, IMMEDIATE
transactions, WAL) and on PostgreSQL (TT_DATABASE_URL).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from envs.models import Env
from nodes.models import Node
from ttportal.errors import ErrorCode, Exhausted
from vms import allocation, placement
from vms.models import PortMapping, Vm
from vms.new_vms import NewVm
from vms.services import build_vms

THREADS = 16
VMS_PER_THREAD = 5


def new_env(owner, name: str = "demo") -> Env:
    now = timezone.now()
    return Env.objects.create(owner=owner, name=name, start_at=now, end_at=now + timedelta(hours=1))


def new_vm(env: Env, node: Node, template, name: str, **extra) -> Vm:
    return Vm(env=env, node=node, template=template, name=name, cpu_num=1, mem_mb=64, disk_mb=20, **extra)


def addressed_vms(env: Env, node: Node, template, count: int) -> list[Vm]:
    """`count` VMs (vm0, vm1, ...) saved with a MAC and an IP, and no ports yet."""
    vms = []
    for i in range(count):
        vm = new_vm(env, node, template, f"vm{i}")
        allocation.save_with_address(vm)
        vms.append(vm)
    return vms


def second_waits() -> bool:
    """Another transaction of this test's database waits on a lock (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0] > 0


def poll(condition: Callable[[], bool], *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def run_threads(count: int, work: Callable[[int], object]) -> list:
    """Run `work(i)` in `count` threads released at once; re-raise the first failure."""
    barrier = threading.Barrier(count)
    results: list = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            result = work(i)
            with lock:
                results.append(result)
        except BaseException as exc:
            with lock:
                errors.append(exc)
        finally:
            connection.close()  # each thread opened its own connection

    threads = [threading.Thread(target=worker, args=(i,), name=f"alloc-{i}") for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


def assert_unique_allocations(node: Node) -> None:
    vms = list(Vm.objects.filter(node=node).values_list("mac", "ip"))
    macs = [m for m, _ in vms]
    ips = [i for _, i in vms]
    assert None not in macs and None not in ips
    assert len(set(macs)) == len(macs)
    assert len(set(ips)) == len(ips)
    for mac, ip in vms:
        assert node.ip_for_mac(mac) == ip
        lo, hi = node.host_index_bounds()
        assert lo <= Node.index_for_mac(mac) <= hi
    ports = list(PortMapping.objects.filter(node=node).values_list("protocol", "public_port"))
    assert not [p for p, n in Counter(ports).items() if n > 1]
    assert all(node.port_min <= port <= node.port_max for _, port in ports)


# --- one request at a time ------------------------------------------------------------


def test_it_gives_a_vm_an_address_derived_from_its_mac(alice, node, template):
    env = new_env(alice)
    vm = new_vm(env, node, template, "web")
    allocation.save_with_address(vm)
    vm.refresh_from_db()
    assert vm.mac.startswith(node.mac_prefix + ":")
    assert vm.ip == node.ip_for_mac(vm.mac)
    assert vm.addr == node.public_host  # NAT: clients dial the node

    flat = new_vm(env, node, template, "db", net_kind=Vm.NetKind.FLAT)
    allocation.save_with_address(flat)
    flat.refresh_from_db()
    assert flat.addr == flat.ip  # FLAT: the VM's own address
    assert flat.mac != vm.mac


def test_it_maps_ports_inside_the_nodes_range(alice, node, template):
    vm = new_vm(new_env(alice), node, template, "web")
    allocation.save_with_address(vm)
    tcp = allocation.allocate_port(vm, "tcp", 22)
    udp = allocation.allocate_port(vm, "udp", 53)
    assert node.port_min <= tcp.public_port <= node.port_max
    assert node.port_min <= udp.public_port <= node.port_max
    assert (tcp.vm, tcp.node, tcp.inner_port) == (vm, node, 22)
    assert set(vm.port_mappings.values_list("protocol", "inner_port")) == {("tcp", 22), ("udp", 53)}


def test_it_gives_back_addresses_and_ports_on_release(alice, node, template):
    node.port_min = node.port_max = 20000
    node.save()
    env = new_env(alice)
    vm = new_vm(env, node, template, "web")
    allocation.save_with_address(vm)
    allocation.allocate_port(vm, "tcp", 22)
    allocation.release(vm)
    vm.refresh_from_db()
    assert (vm.mac, vm.ip) == (None, None)
    assert not PortMapping.objects.exists()
    other = new_vm(env, node, template, "other")
    allocation.save_with_address(other)
    assert allocation.allocate_port(other, "tcp", 22).public_port == 20000  # the freed port


def lose_first_pick(monkeypatch, taken: int) -> list:
    """From now on the first `pick_free` returns `taken` whatever is used, and later ones pick
    for real. Returns the count each call was asked for."""
    real_pick = allocation.pick_free
    calls = []

    def stale_first(lo, hi, count, *how):
        calls.append(count)
        return [taken] if len(calls) == 1 else real_pick(lo, hi, count, *how)

    monkeypatch.setattr(allocation, "pick_free", stale_first)
    return calls


def test_it_picks_again_when_a_candidate_was_just_taken(alice, node, template, monkeypatch):
    # Simulate losing a race: the first candidate ignores what is used (as if
    # another request committed it between our read and our insert).
    node.port_min, node.port_max = 20000, 20001
    node.save()
    vm = new_vm(new_env(alice), node, template, "web")
    allocation.save_with_address(vm)
    allocation.allocate_port(vm, "tcp", 22)
    taken = vm.port_mappings.get().public_port
    calls = lose_first_pick(monkeypatch, taken)
    mapping = allocation.allocate_port(vm, "tcp", 80)
    assert len(calls) == 2
    assert mapping.public_port == ({20000, 20001} - {taken}).pop()


def test_it_picks_another_mac_when_a_candidate_was_just_taken(alice, node, template, monkeypatch):
    env = new_env(alice)
    first = new_vm(env, node, template, "a")
    allocation.save_with_address(first)
    calls = lose_first_pick(monkeypatch, Node.index_for_mac(first.mac))
    second = new_vm(env, node, template, "b")
    allocation.save_with_address(second)
    assert len(calls) == 2
    assert second.pk is not None and second.mac != first.mac
    assert Vm.objects.count() == 2


def test_it_gives_up_after_the_retry_budget_and_writes_nothing(alice, node, template, monkeypatch, settings):
    settings.TT_ALLOCATION_RETRIES = 3
    vm = new_vm(new_env(alice), node, template, "web")
    allocation.save_with_address(vm)
    allocation.allocate_port(vm, "tcp", 22)
    taken = vm.port_mappings.get().public_port
    monkeypatch.setattr(allocation, "pick_free", lambda lo, hi, count, *how: [taken])  # always loses
    with transaction.atomic():  # as in a service: the outer transaction must stay usable
        with pytest.raises(Exhausted) as exc:
            allocation.allocate_port(vm, "tcp", 80)
        assert PortMapping.objects.count() == 1
    assert exc.value.code == ErrorCode.EXHAUSTED
    assert "after 3 attempts" in str(exc.value)
    assert list(vm.port_mappings.values_list("inner_port", flat=True)) == [22]


def test_it_refuses_a_second_port_from_a_one_port_range(alice, node, template):
    node.port_min = node.port_max = 20000
    node.save()
    vm = new_vm(new_env(alice), node, template, "web")
    allocation.save_with_address(vm)
    first = allocation.allocate_port(vm, "tcp", 22)
    assert first.public_port == 20000
    with pytest.raises(Exhausted) as exc:
        allocation.allocate_port(vm, "tcp", 80)
    assert exc.value.code == ErrorCode.EXHAUSTED
    assert str(exc.value) == f"node {node.name} has no free tcp port in 20000-20000"
    assert list(PortMapping.objects.values_list("inner_port", "public_port")) == [(22, 20000)]
    # Ports are per protocol: udp still has its one port.
    assert allocation.allocate_port(vm, "udp", 53).public_port == 20000


def test_it_refuses_an_address_when_the_network_is_full(alice, node, template):
    node.vm_network = "10.100.7.0/24"
    node.save()
    env = new_env(alice)
    lo, hi = node.host_index_bounds()
    Vm.objects.bulk_create(
        new_vm(env, node, template, f"vm{i}", mac=node.mac_for_index(i), ip=node.ip_for_index(i))
        for i in range(lo, hi + 1)
    )
    vm = new_vm(env, node, template, "one-too-many")
    with pytest.raises(Exhausted) as exc:
        allocation.save_with_address(vm)
    assert str(exc.value) == f"node {node.name} has no free address in 10.100.7.0/24"
    assert vm.pk is None
    assert Vm.objects.count() == hi - lo + 1
    assert not Vm.objects.filter(name="one-too-many").exists()


def test_it_fills_the_last_free_address(alice, node, template):
    node.vm_network = "10.100.7.0/24"
    node.save()
    env = new_env(alice)
    lo, hi = node.host_index_bounds()
    last = (lo + hi) // 2
    Vm.objects.bulk_create(
        new_vm(env, node, template, f"vm{i}", mac=node.mac_for_index(i), ip=node.ip_for_index(i))
        for i in range(lo, hi + 1)
        if i != last
    )
    vm = new_vm(env, node, template, "last")
    allocation.save_with_address(vm)
    assert vm.ip == f"10.100.7.{last}"


def test_it_writes_no_vm_of_a_batch_whose_ports_run_out(alice, node, template, monkeypatch):
    # build_vms runs inside the service's transaction: one failure undoes the batch.
    # Placement refuses such a batch up front (no_capacity); without its ports filter,
    # allocation is what finds the port gone, as when a concurrent request took it.
    monkeypatch.setattr(placement, "FILTERS", tuple(f for f in placement.FILTERS if f is not placement.ports))
    node.port_min = node.port_max = 20000
    node.save()
    env = new_env(alice)
    with pytest.raises(Exhausted), transaction.atomic():
        build_vms(env, [NewVm(name="a", template=template, ports=[22]),
                        NewVm(name="b", template=template, ports=[22])])
    assert not Vm.objects.exists()
    assert not PortMapping.objects.exists()


# --- a request's ports together (issue 22: a query per port, each reading every used one) --


def crowd(vm: Vm, node: Node, ports) -> None:
    PortMapping.objects.bulk_create(
        PortMapping(vm=vm, node=node, protocol="tcp", inner_port=i + 1, public_port=port)
        for i, port in enumerate(ports))


def queries_of(call) -> int:
    with CaptureQueriesContext(connection) as queries:
        call()
    return len(queries)


def test_a_requests_ports_take_the_same_queries_however_many_are_asked_or_used(alice, node, template):
    node.port_min, node.port_max = 20000, 29999
    node.save()
    env = new_env(alice)
    crowded, asker, other = addressed_vms(env, node, template, 3)
    one = queries_of(lambda: allocation.allocate_ports(asker, [("tcp", 1)]))
    many = queries_of(lambda: allocation.allocate_ports(asker, [("tcp", p) for p in range(2, 34)]))
    assert many == one  # 32 ports: one pick, one insert, like one port
    taken = set(PortMapping.objects.values_list("public_port", flat=True))
    crowd(crowded, node, [p for p in range(20000, 30000) if p % 10 and p not in taken])  # ~9,000 more
    sparse_enough = queries_of(lambda: allocation.allocate_ports(other, [("tcp", p) for p in range(1, 33)]))
    assert sparse_enough <= one + 2  # at most two more queries on a crowded node
    assert other.port_mappings.count() == 32
    assert_unique_allocations(node)


def test_a_crowded_node_hands_out_its_last_free_ports(alice, node, template):
    node.port_min, node.port_max = 20000, 29999
    node.save()
    crowded, asker = addressed_vms(new_env(alice), node, template, 2)
    free = {20007, 21234, 25000, 29999}
    crowd(crowded, node, (p for p in range(20000, 30000) if p not in free))
    wanted = [("tcp", 22), ("tcp", 80), ("udp", 53), ("tcp", 443), ("tcp", 8080)]
    made = allocation.allocate_ports(asker, wanted)
    assert {m.public_port for m in made if m.protocol == "tcp"} == free
    assert sorted(asker.port_mappings.values_list("protocol", "inner_port")) == [
        ("tcp", 22), ("tcp", 80), ("tcp", 443), ("tcp", 8080), ("udp", 53)]


def test_a_request_for_more_ports_than_are_free_gets_none(alice, node, template):
    node.port_min, node.port_max = 20000, 20099
    node.save()
    crowded, asker = addressed_vms(new_env(alice), node, template, 2)
    crowd(crowded, node, range(20000, 20097))  # 3 free
    with pytest.raises(Exhausted) as exc, transaction.atomic():
        allocation.allocate_ports(asker, [("tcp", p) for p in range(1, 5)])
    assert str(exc.value) == f"node {node.name} has fewer than 4 free tcp ports in 20000-20099"
    assert not asker.port_mappings.exists()


# --- many requests at once --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_allocates_unique_addresses_and_ports_under_concurrency(alice, node, template):
    # A /24 and a 100-port range: 80 VMs with 2 ports each collide often.
    node.vm_network = "10.100.7.0/24"
    node.port_min, node.port_max = 20000, 20099
    node.save()
    envs = [new_env(alice, f"env{i}") for i in range(THREADS)]

    def work(i: int) -> list[int]:
        ids = []
        for n in range(VMS_PER_THREAD):
            vm = new_vm(envs[i], node, template, f"vm{n}")
            allocation.save_with_address(vm)
            allocation.allocate_port(vm, "tcp", 22)
            allocation.allocate_port(vm, "udp", 53)
            ids.append(vm.pk)
        return ids

    results = run_threads(THREADS, work)
    assert sum(len(ids) for ids in results) == THREADS * VMS_PER_THREAD
    assert Vm.objects.count() == THREADS * VMS_PER_THREAD
    assert PortMapping.objects.filter(protocol="tcp").count() == THREADS * VMS_PER_THREAD
    assert PortMapping.objects.filter(protocol="udp").count() == THREADS * VMS_PER_THREAD
    assert_unique_allocations(node)


@pytest.mark.django_db(transaction=True)
def test_it_builds_vms_in_concurrent_transactions(alice, node, template):
    # As env_create does: the whole batch in one transaction per request.
    node.vm_network = "10.100.7.0/24"
    node.port_min, node.port_max = 20000, 20099
    node.save()

    def work(i: int) -> list[int]:
        env = new_env(alice, f"env{i}")
        with transaction.atomic():
            vms = build_vms(env, [NewVm(name=f"vm{n}", template=template, ports=[22])
                                  for n in range(VMS_PER_THREAD)])
        return [vm.pk for vm in vms]

    results = run_threads(THREADS, work)
    assert sum(len(ids) for ids in results) == THREADS * VMS_PER_THREAD
    assert Vm.objects.filter(status=Vm.Status.CREATING).count() == THREADS * VMS_PER_THREAD
    assert PortMapping.objects.count() == THREADS * VMS_PER_THREAD
    for env in Env.objects.all():
        assert env.vms.count() == VMS_PER_THREAD
        assert all(vm.port_mappings.count() == 1 for vm in env.vms.all())
    assert_unique_allocations(node)


@pytest.mark.django_db(transaction=True)
def test_it_hands_out_each_port_once_when_too_many_ask(alice, node, template):
    # 16 requests race for 8 ports: 8 win, 8 are told the range is exhausted.
    node.port_min, node.port_max = 20000, 20007
    node.save()
    vms = addressed_vms(new_env(alice), node, template, THREADS)

    def work(i: int) -> object:
        try:
            return allocation.allocate_port(vms[i], "tcp", 22).public_port
        except Exhausted as exc:
            return exc

    results = run_threads(THREADS, work)
    won = sorted(r for r in results if isinstance(r, int))
    refused = [r for r in results if isinstance(r, Exhausted)]
    assert won == list(range(20000, 20008))
    assert len(refused) == THREADS - 8
    assert not [r for r in results if isinstance(r, IntegrityError)]
    for exc in refused:
        assert exc.code == ErrorCode.EXHAUSTED
        assert str(exc) == f"node {node.name} has no free tcp port in 20000-20007"
    assert PortMapping.objects.count() == 8
    assert_unique_allocations(node)


@pytest.mark.django_db(transaction=True)
def test_it_refuses_the_second_of_two_racing_requests_for_one_port(alice, node, template):
    node.port_min = node.port_max = 20000
    node.save()
    vms = addressed_vms(new_env(alice), node, template, 2)

    def work(i: int) -> object:
        try:
            with transaction.atomic():
                return allocation.allocate_port(vms[i], "tcp", 22).public_port
        except Exhausted as exc:
            return exc

    results = run_threads(2, work)
    assert 20000 in results
    (refused,) = [r for r in results if isinstance(r, Exhausted)]
    assert str(refused) == f"node {node.name} has no free tcp port in 20000-20000"
    assert PortMapping.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_picks_again_when_two_batches_cross(alice, node, template, monkeypatch):
    # Two transactions each take a port and then pick the one the other took. On
    # PostgreSQL both hold theirs uncommitted, and one is aborted as the deadlock
    # victim, which must pick again rather than fail the whole request. SQLite
    # serialises writers (BEGIN IMMEDIATE): the second waits for the first to
    # commit, so the two never hold a port at once, and it picks again on the
    # unique violation. Either way both batches end with their own ports.
    postgres = connection.vendor == "postgresql"
    node.port_min, node.port_max = 20000, 20009
    node.save()
    vms = addressed_vms(new_env(alice), node, template, 2)
    real_pick, real_lost_race = allocation.pick_free, allocation._lost_race
    # On SQLite the other writer cannot arrive while this one holds the lock: wait
    # briefly (well under SQLite's busy timeout), then go on alone.
    both_hold_one = threading.Barrier(2, timeout=1)
    first_holds = threading.Event()
    local = threading.local()
    sqlstates, overlapped = [], []

    def crossed_on_postgres(calls: int) -> list[int] | None:
        # A port's insert moves its node's use counters (vms/node_usage.py), whose row the
        # first transaction then holds to its end: the second's insert of 20001 enters the
        # index and waits on that row, so the two cannot meet at a barrier. The first picks
        # 20001 once the second waits: each waits on the other.
        if local.me == 0 and calls == 1:
            return [20000]
        if local.me == 1 and calls == 1:
            first_holds.wait(30)
            return [20001]
        if local.me == 0 and calls == 2:
            first_holds.set()
            overlapped.append(poll(second_waits, timeout=30))
            return [20001]
        return None

    def crossed_pick(lo, hi, count, *how):
        local.calls = getattr(local, "calls", 0) + 1
        if postgres:
            return crossed_on_postgres(local.calls) or real_pick(lo, hi, count, *how)
        if local.calls == 1:
            return [20000 + local.me]
        if local.calls == 2:
            try:
                both_hold_one.wait()
                overlapped.append(True)
            except threading.BrokenBarrierError:
                overlapped.append(False)
            return [20000 + (1 - local.me)]  # the port the other one took
        return real_pick(lo, hi, count, *how)

    def recording_lost_race(exc):
        sqlstates.append(getattr(exc.__cause__, "sqlstate", None))
        return real_lost_race(exc)

    monkeypatch.setattr(allocation, "pick_free", crossed_pick)
    monkeypatch.setattr(allocation, "_lost_race", recording_lost_race)

    def work(i: int) -> list[int]:
        local.me = i
        with transaction.atomic():
            ports = [allocation.allocate_port(vms[i], "tcp", inner).public_port for inner in (22, 80)]
        return ports

    results = run_threads(2, work)
    if postgres:
        assert overlapped == [True]  # both held a port uncommitted at once
        assert "40P01" in sqlstates  # a deadlock really happened, and was survived
    else:
        assert True not in overlapped  # never two writers at once
        assert sqlstates and "40P01" not in sqlstates  # the second lost the race and picked again
    assert sorted(len(ports) for ports in results) == [2, 2]
    assert PortMapping.objects.count() == 4
    assert_unique_allocations(node)
