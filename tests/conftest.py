"""Shared fixtures: named users (alice owns, bob is an outsider, olga operates: staff in the
group "operators", which holds every permission of the project's apps; stan is staff
with no permission at all),
a node on libvirt's in-process test driver, a template, a way to run the
tasks that services enqueue on commit, and a clock frozen at T0.

Plain helpers and constants (T0, TEST_URI, done, domain_state, ...) are in tests/support.py."""

from __future__ import annotations

import contextlib
import os

import libvirt
import pytest
from django.contrib.auth import get_user_model

from engines.libvirt.connection import get_connection
from nodes.models import Node
from nodes.registry import forget_engines
from tests.support import T0, TEMPLATE_VOLUME, TEST_POOL, TEST_URI
from ttportal import ratelimit
from vms.models import VmTemplate

# Debian keeps mkfs.vfat (the cloud-init seeds) in /usr/sbin, which a user's PATH leaves out:
# the unit tests run as any user (./tt.sh test --unit), not only as root.
for _sbin in ("/usr/sbin", "/sbin"):
    if _sbin not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + _sbin


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """With -n N, the real-guest tests stay together on one worker (tests/xdist_schedule.py)."""
    if config.getvalue("dist") not in ("load", "loadgroup"):
        return None  # the schedule asked for by name (loadfile, each, ...)
    from tests.xdist_schedule import RealGuestsTogether

    return RealGuestsTogether(config, log)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput"):  # an xdist worker: the scheduler hands out in this order
        from tests.xdist_schedule import real_guests_first

        real_guests_first(items)


_MIGRATED_SCHEDULES: dict[str, dict] = {}


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The test database as pytest-django makes it (by running the migrations), and the task
    schedules those migrations made, read before any test runs: a test that commits (a live
    server, transaction=True) empties every table when it ends, and with several xdist
    workers no order says which tests come after one."""
    from django_q.models import Schedule

    with django_db_blocker.unblock():
        _MIGRATED_SCHEDULES.update({s["name"]: s for s in Schedule.objects.values()})
    yield


@pytest.fixture
def migrated_schedules(django_db_setup) -> dict[str, dict]:
    """Each schedule the migrations made, by name, as a row of django_q's Schedule."""
    return _MIGRATED_SCHEDULES


@pytest.fixture(autouse=True)
def _sync_tasks(settings):
    # Tasks run inline in the test process; the real cluster is exercised in
    # tests/integration.
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    settings.TT_MGMT_COOLDOWN = 0


@pytest.fixture(autouse=True)
def _forget_rate_counts(request, django_db_blocker):
    """Rate limits count in the "limits" cache (ttportal/ratelimit.py): the database's cache
    table, which a test that commits (live server, transaction=True) would leave to the next
    one, or Redis (TT_REDIS_URL), which no test's rollback reaches. Modules that share one
    world (tests/module_world.py) keep one user for all their tests, so on Redis every test's
    counts are forgotten."""
    yield
    marker = request.node.get_closest_marker("django_db")
    commits = {"live_server", "transactional_db"} & set(request.fixturenames) or (
        marker is not None and marker.kwargs.get("transaction"))
    if commits or not ratelimit.counts_in_database():
        with django_db_blocker.unblock():
            ratelimit.clear()


@pytest.fixture
def frozen_clock(time_machine):
    """Time stands still at T0. A module opts in with
    `pytestmark = pytest.mark.usefixtures("frozen_clock")`; a test may still move it."""
    time_machine.move_to(T0, tick=False)


@pytest.fixture(autouse=True)
def _clean_test_driver():
    """libvirt's test driver keeps state per process: start every test from a clean node."""
    forget_engines()
    yield
    clean_test_driver()


def clean_test_driver() -> None:
    """Nothing the tests made left on libvirt's test driver, and no engine remembered."""
    conn = get_connection(TEST_URI)
    for dom in conn.listAllDomains():
        if dom.name().startswith("tt-"):
            if dom.isActive():
                dom.destroy()
            if dom.hasManagedSaveImage(0):
                dom.managedSaveRemove(0)
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    for pool in conn.listAllStoragePools():
        if pool.name().startswith("tt-"):
            for vol in pool.listAllVolumes():
                vol.delete(0)
            if pool.isActive():
                pool.destroy()
            pool.undefine()
    for net in conn.listAllNetworks():
        if net.name().startswith("tt-"):
            if net.isActive():
                net.destroy()
            net.undefine()
    forget_engines()


def make_user(username: str, **extra):
    return get_user_model().objects.create_user(username=username, password="pw-" + username, **extra)


@pytest.fixture
def alice(db):
    return make_user("alice")


@pytest.fixture
def bob(db):
    return make_user("bob")


# What an operator is given: every permission of the project's own apps (Envs, VMs,
# snapshots, operations, nodes, warm pools, quotas, notifications), none of auth's.
OPERATOR_APPS = ("accounts", "audit", "envs", "nodes", "notifications", "operations", "vms")


def operators_group():
    from django.contrib.auth.models import Group, Permission

    group, made = Group.objects.get_or_create(name="operators")
    if made:
        group.permissions.set(Permission.objects.filter(content_type__app_label__in=OPERATOR_APPS))
    return group


def make_staff(username: str, *perms: str):
    """A staff user holding exactly `perms` ("app.codename")."""
    from django.contrib.auth.models import Permission

    user = make_user(username, is_staff=True)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
    return user


@pytest.fixture
def olga(db):
    user = make_user("olga", is_staff=True)
    user.groups.add(operators_group())
    return user


@pytest.fixture
def stan(db):
    """Staff without a single permission: the admin's door, and nothing behind it."""
    return make_user("stan", is_staff=True)


@pytest.fixture
def node(db):
    return make_node()


def make_node() -> Node:
    return Node.objects.create(
        name="local-test", kind="libvirt", uri=TEST_URI, public_host="203.0.113.10",
        vm_network="10.100.0.0/16", port_min=20000, port_max=20999,
        notes="libvirt test driver: boots nothing",
    )


def create_template_volume(size_mb: int = 20) -> str:
    conn = get_connection(TEST_URI)
    from nodes.registry import get_engine

    pool = conn.storagePoolLookupByName(TEST_POOL)
    try:
        return pool.storageVolLookupByName(TEMPLATE_VOLUME).path()
    except libvirt.libvirtError:
        pass
    xml = (
        f"<volume><name>{TEMPLATE_VOLUME}</name><capacity unit='M'>{size_mb}</capacity>"
        "<target><format type='qcow2'/></target></volume>"
    )
    _ = get_engine  # the pool exists once the node's engine has been initialised
    return pool.createXML(xml, 0).path()


@pytest.fixture
def template(node):
    return make_template(node)


def make_template(node: Node) -> VmTemplate:
    from nodes.registry import get_engine

    get_engine(node)  # creates the pool and network on the test driver
    create_template_volume(20)
    return VmTemplate.objects.create(
        name="tt/busybox", path=TEMPLATE_VOLUME, compatible_engines=["libvirt"],
        size_mb=20, min_mem_mb=64, memo="test-driver template",
    )


@pytest.fixture
def run_tasks(django_capture_on_commit_callbacks):
    """Run the tasks enqueued by services inside the block, as a worker would."""

    @contextlib.contextmanager
    def runner():
        with django_capture_on_commit_callbacks(execute=True):
            yield

    return runner


@pytest.fixture
def make_env(template, run_tasks):
    """Make an Env whose VMs are created and running: `make_env(alice, vms=2)`.

    `vms` is a number of default VMs (vm0, vm1, ...) or a list of NewVm.
    """
    return env_maker(template, run_tasks)


def env_maker(template: VmTemplate, run_tasks):
    from envs.models import Env
    from envs.services import env_create
    from vms.new_vms import NewVm

    def make(owner, *, name: str = "demo", vms=1, **kwargs) -> Env:
        if isinstance(vms, int):
            vms = [NewVm(name=f"vm{i}", template=template.name) for i in range(vms)]
        with run_tasks():
            op = env_create(owner=owner, by=owner, name=name, vms=vms, **kwargs)
        op.refresh_from_db()
        assert op.status == "succeeded", op.error_message
        return Env.objects.get(pk=op.env_id)

    return make


@pytest.fixture
def firewall(node):
    """What the node's nftables table would hold (the test driver's in-memory firewall)."""
    from nodes.registry import get_engine

    return get_engine(node).firewall.state


@pytest.fixture
def db_state(db):
    """A callable that captures every row the services write, to prove a refusal changed nothing."""
    from accounts.models import SshKey
    from envs.models import Blueprint, Env, EnvMember
    from operations.models import Operation
    from vms.models import PortMapping, Snapshot, Vm

    def take() -> dict:
        rows = {
            model.__name__: list(model.objects.order_by("pk").values())
            for model in (Env, Vm, PortMapping, Snapshot, Operation, SshKey, Blueprint, EnvMember)
        }
        rows["Blueprint shares"] = (
            sorted(Blueprint.shared_with_users.through.objects.values_list("blueprint_id", "user_id")),
            sorted(Blueprint.shared_with_groups.through.objects.values_list("blueprint_id", "group_id")))
        return rows

    return take


@pytest.fixture(autouse=True)
def _forget_node_probes():
    """What nodes answered is reused for a few seconds per process (ttportal.probes),
    keyed by node id: never from one test to the next."""
    from ttportal import probes

    probes.forget()


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    # The default PBKDF2 costs ~0.5 s per named user; tests only need logins to work.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def quotas_out_of_the_way(settings):
    """For tests of something else that a user's default quota would refuse (the API's
    own bounds, many Envs alive at once): every quota as good as unlimited."""
    for name in ("ENVS", "VMS", "VCPUS", "MEM_MB", "DISK_MB", "SNAPSHOTS", "PORTS"):
        setattr(settings, f"TT_QUOTA_{name}", 10**9)
    settings.TT_QUOTA_MAX_LIFETIME = settings.TT_QUOTA_MAX_EXTENSION = settings.TT_MAX_ENV_LIFETIME


@pytest.fixture
def postgres(db):
    """Races between transactions are tested on PostgreSQL (CI's PostgreSQL pass): SQLite
    runs one writing transaction at a time (BEGIN IMMEDIATE), so there is none to test."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("a race between transactions: tested on PostgreSQL (CI's PostgreSQL pass); SQLite "
                    "serialises every writing transaction")
