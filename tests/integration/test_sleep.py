"""Sleep when idle, wake on the first connection, on the real node with the real task
cluster (`tt_qcluster`, whose main process serves the node's waker and reads its port
counters: envs/sleep.py).

The idle threshold is the issue's minute; only how often the counters are read is
shortened (TT_IDLE_CHECK_SECONDS=2), so the Env sleeps between 60 and 62 s after the
last connection, plus the time its save takes.
"""

from __future__ import annotations

import socket
import time

import libvirt
import pytest
from django.conf import settings

from engines.libvirt.connection import get_connection
from envs.kinds import EnvKind
from envs.models import Env
from envs.services import env_create
from nodes.registry import get_engine
from operations.models import Operation
from tests.integration import netlab
from tests.integration.cluster import Cluster, wait_for, wait_until_done
from tests.integration.conftest import public_port, shell
from vms.models import NodeUsage, Vm
from vms.new_vms import NewVm

pytestmark = pytest.mark.django_db(transaction=True)

HTTP = ("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port} 2>/dev/null | grep -q '200 OK' "
        "&& echo REACHED || echo BLOCKED")
CHECK_SECONDS = 2


@pytest.fixture
def tasks_to_the_broker(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}


@pytest.fixture
def cluster(qnode, tasks_to_the_broker, tmp_path):
    running = Cluster(tmp_path / "cluster.log", TT_IDLE_CHECK_SECONDS=str(CHECK_SECONDS))
    running.start()
    yield running
    running.close()


def created(owner, name: str, **kwargs) -> Env:
    vms = [NewVm(name="web", template="tt/busybox", mem_mb=128, ports=[80, 23])]
    op = wait_until_done(env_create(owner=owner, by=owner, name=name, vms=vms, **kwargs), time.time() + 300)
    assert op.status == "succeeded", f"{op.error_code}: {op.error_message}\n{op.log}"
    return Env.objects.get(pk=op.env_id)


def wake_elements(qnode) -> set[int]:
    """The public ports the node's `wake_tcp` map leads to the waker."""
    listing = get_engine(qnode).firewall.listing()
    keys = [raw[0] for raw in listing.get("wake_tcp", [])]
    return {key["elem"]["val"] if isinstance(key, dict) else key for key in keys}


def held(node) -> tuple[int, int]:
    usage = NodeUsage.objects.get(node=node)
    return usage.cpu, usage.mem_mb


def listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def asleep(env: Env, qnode, deadline: float) -> Env:
    def sleeping() -> bool:
        env.refresh_from_db()
        return env.asleep_since is not None and not Operation.objects.filter(
            env=env, kind=EnvKind.ENV_SLEEP).exclude(status__in=Operation.DONE).exists()

    wait_for(sleeping, deadline, f"Env {env.name} to sleep")
    op = Operation.objects.filter(env=env, kind=EnvKind.ENV_SLEEP).latest("pk")
    assert op.status == "succeeded", f"{op.error_code}: {op.error_message}\n{op.log}"
    return env


def test_an_idle_env_sleeps_and_its_first_connection_wakes_it(qnode, alice, bob, cluster):
    bobs = created(bob, "bobs")  # never sleeps
    env = created(alice, "sleepy", idle_suspend=1)
    vm, srv = env.vms.get(), bobs.vms.get()
    url = f"http://{qnode.public_host}:{public_port(vm, 80)}/"
    netlab.wait_for_http(url, expect=vm.ip)
    # The last connection before the idle minute: its first packet, the one the counters
    # count, leaves after this moment (not when its answer is read, which may come later).
    last_traffic = time.time()
    assert vm.ip in (netlab.client_get(url, timeout=10) or "")

    # A minute without a connection: asleep, its VM saved (no QEMU process left), the port
    # leading to the waker.
    env = asleep(env, qnode, last_traffic + 60 + 90)
    slept_after = env.asleep_since.timestamp() - last_traffic
    assert 60 <= slept_after <= 60 + 2 * CHECK_SECONDS + 5, slept_after
    vm.refresh_from_db()
    assert vm.status == Vm.Status.SUSPENDED
    dom = get_connection(qnode.uri).lookupByName(vm.engine_name)
    assert not dom.isActive() and dom.hasManagedSaveImage(0)
    assert public_port(vm, 80) in wake_elements(qnode)
    # The node's capacity is freed: only bob's VM holds vCPUs and memory (placement's counters).
    assert held(qnode) == (srv.cpu_num, srv.mem_mb)
    bobs.refresh_from_db()
    assert bobs.asleep_since is None

    # The first request is answered with the VM's page (the waker held it through the wake).
    page = netlab.client_get(url, timeout=60)
    assert page is not None and vm.ip in page
    wake = Operation.objects.filter(env=env, kind=EnvKind.ENV_WAKE).latest("pk")
    assert wake.status == "succeeded", wake.log
    env.refresh_from_db()
    assert env.asleep_since is None
    assert held(qnode) == (srv.cpu_num + vm.cpu_num, srv.mem_mb + vm.mem_mb)
    # Later ones go straight to the VM: the map no longer leads to the waker.
    assert public_port(vm, 80) not in wake_elements(qnode)
    before = get_engine(qnode).firewall.port_connections()[("tcp", public_port(vm, 80))]
    page = netlab.client_get(url, timeout=5)
    assert page is not None and vm.ip in page
    assert get_engine(qnode).firewall.port_connections()[("tcp", public_port(vm, 80))] == before + 1

    # Isolation holds for the woken VM, both ways.
    netlab.wait_for_shell(qnode.public_host, public_port(vm, 23))
    netlab.wait_for_shell(qnode.public_host, public_port(srv, 23))
    assert shell(vm, HTTP.format(ip=srv.ip, port=80)).strip() == "BLOCKED"
    assert shell(srv, HTTP.format(ip=vm.ip, port=80)).strip() == "BLOCKED"
    last_traffic = time.time()

    # Asleep again; the worker is killed (SIGKILL to its process group) and started again:
    # the waker is back and the request is answered.
    env = asleep(env, qnode, last_traffic + 60 + 90)
    cluster.kill()
    cluster.start()
    wait_for(lambda: listening(qnode.gateway_ip, settings.TT_WAKER_PORT), time.time() + 60,
             "the waker to listen again")
    page = netlab.client_get(url, timeout=90)
    assert page is not None and vm.ip in page, cluster.log()[-3000:]
    env.refresh_from_db()
    assert env.asleep_since is None
    assert public_port(vm, 80) not in wake_elements(qnode)
    dom = get_connection(qnode.uri).lookupByName(vm.engine_name)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
