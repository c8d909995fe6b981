"""/metrics (ttportal/metrics.py): Prometheus' text format, read from the database at
scrape time in a constant number of queries, plus each node's firewall drop counters;
for staff and for the addresses in TT_METRICS_ALLOWED only."""

from __future__ import annotations

import ipaddress
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from prometheus_client.parser import text_string_to_metric_families

from envs.models import Env
from nodes.models import Node, NodeHeartbeat
from operations import registry
from operations.models import Operation
from tests.support import T0, TEST_URI
from vms import blocked
from vms.models import PortMapping, Vm
from vms.new_vms import NewVm

OUTSIDE = "203.0.113.7"


def scrape(client, **extra) -> dict[str, dict[tuple, float]]:
    """family name -> {(sample name, sorted labels): value}."""
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {}
    for family in text_string_to_metric_families(response.content.decode()):
        families[family.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
    return families


def value(families, family: str, sample: str | None = None, **labels) -> float | None:
    return families[family].get((sample or family, tuple(sorted(labels.items()))))


def other_node(name: str, index: int, **fields) -> Node:
    return Node.objects.create(name=name, uri=TEST_URI, public_host=f"203.0.113.{20 + index}",
                               vm_network=f"10.{110 + index}.0.0/16", port_min=30000, port_max=30099,
                               **fields)


def add_vm(env: Env, node: Node, template, name: str, status: str = "running", *, ip: str | None = None,
           cpu: int = 1, mem: int = 64) -> Vm:
    """A VM row as the services leave it (the metrics read rows; nothing boots)."""
    index = Vm.objects.filter(node=node).count() + 2
    return Vm.objects.create(env=env, node=node, template=template, name=name, status=status, cpu_num=cpu,
                             mem_mb=mem, disk_mb=20, mac=node.mac_for_index(index),
                             ip=ip or node.ip_for_index(index))


def an_env(owner, name: str, end_in: timedelta = timedelta(hours=4), status: str = "active") -> Env:
    now = timezone.now()
    return Env.objects.create(owner=owner, name=name, start_at=now - timedelta(minutes=1),
                              end_at=now + end_in, status=status)


@pytest.fixture
def scraper(client, olga):
    client.force_login(olga)
    return client


@pytest.fixture
def no_drops(monkeypatch):
    """Every node's firewall answers, with nothing dropped (and no engine started)."""

    monkeypatch.setattr(blocked, "drops_per_vm", lambda node: {})


# --- what is exported ---------------------------------------------------------------


def test_it_counts_vms_by_status_and_node(scraper, alice, node, template, make_env):
    env = make_env(alice, vms=2)
    env.vms.filter(name="vm1").update(status="stopped")
    spare = other_node("spare", 1)
    families = scrape(scraper)
    for status in Vm.Status.values:
        for n in (node, spare):
            expected = Vm.objects.filter(node=n, status=status).count()
            assert value(families, "tt_vms", status=status, node=n.name) == expected, (status, n)
    assert value(families, "tt_vms", status="running", node=node.name) == 1
    assert value(families, "tt_vms", status="stopped", node=node.name) == 1


def test_it_shows_each_nodes_capacity_used_and_free(scraper, alice, node, template, make_env):
    Node.objects.filter(pk=node.pk).update(cpu_capacity=8, mem_capacity_mb=4096)
    make_env(alice, vms=[NewVm(name="a", template=template.name, cpu_num=2, mem_mb=256, ports=[22, "53/udp"]),
                         NewVm(name="b", template=template.name, cpu_num=1, mem_mb=128, ports=[80])])
    env = an_env(alice, "gone")
    add_vm(env, node, template, "old", status="destroyed", cpu=4, mem=1024)  # holds nothing any more
    unlimited = other_node("unlimited", 1)
    families = scrape(scraper)
    mib = 1024 * 1024
    assert value(families, "tt_node_vcpus_capacity", node=node.name) == 8
    assert value(families, "tt_node_vcpus_used", node=node.name) == 3
    assert value(families, "tt_node_vcpus_free", node=node.name) == 5
    assert value(families, "tt_node_memory_capacity_bytes", node=node.name) == 4096 * mib
    assert value(families, "tt_node_memory_used_bytes", node=node.name) == 384 * mib
    assert value(families, "tt_node_memory_free_bytes", node=node.name) == (4096 - 384) * mib
    assert value(families, "tt_node_live_vms", node=node.name) == 2
    size = node.port_max - node.port_min + 1
    for protocol in ("tcp", "udp"):
        used = PortMapping.objects.filter(node=node, protocol=protocol).count()
        assert value(families, "tt_node_ports_used", node=node.name, protocol=protocol) == used
        assert value(families, "tt_node_ports_free", node=node.name, protocol=protocol) == size - used
    assert value(families, "tt_node_ports_used", node=node.name, protocol="tcp") == 2
    # Unlimited: its capacity says 0, and it has no "free" sample.
    assert value(families, "tt_node_vcpus_capacity", node=unlimited.name) == 0
    assert value(families, "tt_node_vcpus_free", node=unlimited.name) is None
    assert value(families, "tt_node_memory_free_bytes", node=unlimited.name) is None
    assert value(families, "tt_node_enabled", node=node.name, engine="libvirt") == 1


def test_it_counts_envs_and_those_expiring_within_the_hour(scraper, alice, bob):
    an_env(alice, "soon", timedelta(minutes=30))
    an_env(bob, "soon", timedelta(minutes=59))
    an_env(alice, "later", timedelta(hours=2))
    an_env(alice, "gone", timedelta(minutes=10), status="destroyed")
    families = scrape(scraper)
    assert value(families, "tt_envs_expiring_next_hour") == 2
    assert value(families, "tt_envs", status="active") == 3
    assert value(families, "tt_envs", status="destroyed") == 1
    assert value(families, "tt_envs", status="destroying") == 0


def test_it_counts_operations_and_histograms_their_durations(scraper, alice):
    now = timezone.now()

    def op(kind, status, seconds=None):
        started = now - timedelta(hours=1)
        finished = started + timedelta(seconds=seconds) if seconds is not None else None
        Operation.objects.create(kind=kind, status=status, started_at=started if finished else None,
                                 finished_at=finished)

    for seconds in (0.3, 4, 45, 700):
        op("vm_start", "succeeded", seconds)
    op("vm_start", "failed", 7200)
    op("vm_start", "running")
    op("env_create", "queued")
    families = scrape(scraper)
    for kind in registry.kind_values():
        for status in Operation.Status.values:
            expected = Operation.objects.filter(kind=kind, status=status).count()
            assert value(families, "tt_operations", kind=kind, status=status) == expected, (kind, status)
    assert value(families, "tt_operations", kind="vm_start", status="succeeded") == 4

    def bucket(le, status="succeeded"):
        return value(families, "tt_operation_duration_seconds", "tt_operation_duration_seconds_bucket",
                     kind="vm_start", status=status, le=le)

    assert [bucket(le) for le in ("0.5", "1.0", "5.0", "10.0", "60.0", "600.0", "1800.0", "+Inf")] == \
        [1, 1, 2, 2, 3, 3, 4, 4]
    assert value(families, "tt_operation_duration_seconds", "tt_operation_duration_seconds_count",
                 kind="vm_start", status="succeeded") == 4
    assert value(families, "tt_operation_duration_seconds", "tt_operation_duration_seconds_sum",
                 kind="vm_start", status="succeeded") == pytest.approx(749.3)
    assert bucket("3600.0", "failed") == 0 and bucket("+Inf", "failed") == 1
    # Operations not finished have no duration.
    assert value(families, "tt_operation_duration_seconds", "tt_operation_duration_seconds_count",
                 kind="env_create", status="queued") is None


def test_it_shows_the_task_queue_depths(scraper, node):
    b = Node.objects.create(name="b", uri=node.uri, public_host="203.0.113.30", vm_network="10.130.0.0/16",
                            own_cluster=True)
    site, own = get_broker(Conf.PREFIX), get_broker(b.name)
    try:
        for _ in range(4):
            site.enqueue("x")
        own.enqueue("y")
        assert site.dequeue()  # taken by a worker: no longer waiting
        families = scrape(scraper)
        assert value(families, "tt_task_queue_depth", queue=Conf.PREFIX) == 3
        assert value(families, "tt_task_queue_depth", queue="b") == 1
        assert value(families, "tt_scrape_errors", source="task_queue") == 0
    finally:
        site.delete_queue()
        own.delete_queue()


def test_it_shows_each_node_s_state_and_heartbeat(scraper, node, time_machine):
    time_machine.move_to(T0, tick=False)
    b = Node.objects.create(name="b", uri=node.uri, public_host="203.0.113.30", vm_network="10.130.0.0/16",
                            own_cluster=True)
    NodeHeartbeat.objects.create(node=b, beat_at=T0 - timedelta(seconds=12), worker="b:1", ports_free=1,
                                 addresses_free=1, vms_running=0)
    Node.objects.filter(pk=node.pk).update(drained=True)
    families = scrape(scraper)
    assert value(families, "tt_node_state", node="b", state="up") == 1
    assert value(families, "tt_node_state", node="b", state="down") == 0
    assert value(families, "tt_node_heartbeat_age_seconds", node="b") == 12
    assert value(families, "tt_node_state", node=node.name, state="drained") == 1
    assert value(families, "tt_node_heartbeat_age_seconds", node=node.name) is None  # never beat
    time_machine.move_to(T0 + timedelta(minutes=5), tick=False)  # b missed its beats
    assert value(scrape(scraper), "tt_node_state", node="b", state="down") == 1


def test_it_exports_what_each_vms_firewall_dropped(scraper, alice, node, template, make_env, monkeypatch):
    from engines.network.firewall import MemoryFirewall

    env = make_env(alice, vms=2)
    first, second = env.vms.order_by("name")
    monkeypatch.setattr(MemoryFirewall, "drops_per_vm", lambda self: {
        first.ip: {"egress_denied": 7, "blacklisted": 3, "private_network": 5},
        "10.100.250.250": {"egress_denied": 99, "blacklisted": 99},  # no live VM has it
    }, raising=False)
    families = scrape(scraper)
    samples = families["tt_vm_blocked_packets"]
    assert samples == {
        ("tt_vm_blocked_packets_total", (("node", node.name), ("reason", reason), ("vm", str(vm.pk)))): count
        for vm, reason, count in ((first, "egress_denied", 7), (first, "blacklisted", 3),
                                  (first, "private_network", 5), (second, "egress_denied", 0),
                                  (second, "blacklisted", 0), (second, "private_network", 0))
    }
    assert value(families, "tt_node_scrape_errors", node=node.name) == 0


def test_it_skips_a_node_it_cannot_ask_and_says_so(scraper, settings, alice, node, template, monkeypatch):
    settings.TT_NODE_PROBE_TIMEOUT = 1
    env = an_env(alice, "spread")
    broken, slow = other_node("broken", 1), other_node("slow", 2)
    vms = {n.name: add_vm(env, n, template, f"on-{n.name}") for n in (node, broken, slow)}
    release = threading.Event()

    def drops_per_vm(node):
        if node.name == "broken":
            raise OSError("nft: cannot connect to node")
        if node.name == "slow":
            release.wait(30)
        return {vms[node.name].ip: {"egress_denied": 2, "blacklisted": 1}}

    monkeypatch.setattr(blocked, "drops_per_vm", drops_per_vm)
    try:
        started = time.monotonic()
        families = scrape(scraper)
        assert time.monotonic() - started < 5
    finally:
        release.set()
    assert value(families, "tt_vm_blocked_packets", "tt_vm_blocked_packets_total",
                 vm=str(vms[node.name].pk), node=node.name, reason="egress_denied") == 2
    assert {labels for _, labels in families["tt_vm_blocked_packets"]} == {
        (("node", node.name), ("reason", r), ("vm", str(vms[node.name].pk))) for r in blocked.REASONS}
    assert value(families, "tt_node_scrape_errors", node=node.name) == 0
    assert value(families, "tt_node_scrape_errors", node="broken") == 1
    assert value(families, "tt_node_scrape_errors", node="slow") == 1
    # The rest of the scrape is all there.
    assert value(families, "tt_vms", status="running", node="broken") == 1


# --- a constant number of queries -----------------------------------------------------


def test_it_asks_the_database_the_same_number_of_queries_however_much_there_is(
        scraper, alice, bob, node, template, no_drops):
    def queries() -> int:
        scrape(scraper)  # the session and user are read once; count a second scrape
        with CaptureQueriesContext(connection) as captured:
            scrape(scraper)
        return len(captured)

    env = an_env(alice, "small")
    add_vm(env, node, template, "one")
    small = queries()
    for i in range(1, 6):
        n = other_node(f"more-{i}", i, cpu_capacity=16)
        big = an_env(bob, f"big-{i}", timedelta(minutes=20))
        for j in range(4):
            vm = add_vm(big, n, template, f"vm-{j}", status="stopped" if j % 2 else "running")
            PortMapping.objects.create(vm=vm, node=n, inner_port=22, public_port=30000 + j)
        Operation.objects.create(kind="vm_add", status="succeeded", env=big, started_at=timezone.now(),
                                 finished_at=timezone.now() + timedelta(seconds=i))
    assert queries() == small


# --- who may read it -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remote", "headers", "allowed"),
    [
        ("127.0.0.1", {}, True),  # Prometheus on this host
        ("::1", {}, True),
        (OUTSIDE, {}, False),
        (OUTSIDE, {"HTTP_X_FORWARDED_FOR": "127.0.0.1"}, False),  # claims to be local: not a proxy
        ("127.0.0.1", {"HTTP_X_FORWARDED_FOR": OUTSIDE}, False),  # through the local proxy
        ("127.0.0.1", {"HTTP_X_FORWARDED_PROTO": "https"}, False),  # a proxy that hides who it is for
    ],
)
def test_it_lets_anonymous_scrapers_in_by_address_only(client, db, remote, headers, allowed):
    response = client.get("/metrics", REMOTE_ADDR=remote, **headers)
    assert response.status_code == (200 if allowed else 403)


def test_it_lets_staff_with_view_node_in_from_anywhere_and_nobody_else(client, alice, stan, olga):
    client.force_login(alice)
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDE).status_code == 403
    client.force_login(stan)  # staff without nodes.view_node
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDE).status_code == 403
    client.force_login(olga)
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDE).status_code == 200


def test_it_lets_in_the_networks_it_is_told_to(client, db, settings):
    settings.TT_METRICS_ALLOWED = (ipaddress.ip_network("10.0.0.0/8"),)
    assert client.get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


def test_it_is_not_redirected_to_https(client, db, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200


def test_it_speaks_openmetrics_to_a_scraper_that_asks_for_it(scraper):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

    response = scraper.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response["Content-Type"].startswith("application/openmetrics-text")
    names = {family.name for family in openmetrics_families(response.content.decode())}
    assert {"tt_vms", "tt_vm_blocked_packets", "tt_operation_duration_seconds"} <= names
