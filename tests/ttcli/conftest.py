"""The CLI's tests: `tt` run in-process by Typer's CliRunner, its config in a temporary
directory, never the user's."""

from __future__ import annotations

import importlib
import re

import pytest
from typer.testing import CliRunner


@pytest.fixture(autouse=True)
def tt_config(tmp_path, monkeypatch):
    """A config directory of the test's own; no TT_URL/TT_TOKEN from the environment."""
    directory = tmp_path / "tt-config"
    monkeypatch.setenv("TT_CONFIG_DIR", str(directory))
    monkeypatch.delenv("TT_URL", raising=False)
    monkeypatch.delenv("TT_TOKEN", raising=False)
    return directory


@pytest.fixture
def tt():
    """tt(*args, input=None) -> the CliRunner result (exit_code, stdout, stderr)."""
    from ttcli.main import app

    runner = CliRunner()

    def run(*args: str, input: str | None = None):
        return runner.invoke(app, list(args), input=input, catch_exceptions=False)

    return run


@pytest.fixture
def envfile_package():
    """The Env file parser the CLI checks files with (envfile/)."""
    return importlib.import_module("envfile")


# libvirt's test driver keeps its state in the memory of each process that opens it. A file
# URI gives every process the same starting state: the pool with the template's volume.
TEST_NODE_XML = """\
<node>
  <pool type='dir'>
    <name>{pool}</name>
    <target><path>/tt-test-pool</path></target>
    <volume type='file'>
      <name>{volume}</name>
      <capacity unit='M'>20</capacity>
      <target><format type='qcow2'/></target>
    </volume>
  </pool>
</node>
"""


@pytest.fixture
def cluster_template(transactional_db, settings, tmp_path):
    """A busybox template on a test-driver node whose operations a real task cluster runs
    (`manage.py tt_qcluster` in its own process, one worker, on the test database): what
    the live server enqueues, that process runs, as on a real site. Everything the engine
    does happens in that worker; the live server only reads and writes the database."""
    from nodes.models import Node
    from tests.integration.cluster import Cluster
    from tests.support import TEMPLATE_VOLUME, TEST_POOL
    from vms.models import VmTemplate

    driver_file = tmp_path / "test-node.xml"
    driver_file.write_text(TEST_NODE_XML.format(pool=TEST_POOL, volume=TEMPLATE_VOLUME))
    node = Node.objects.create(
        name="local-test", kind="libvirt", uri=f"test://{driver_file}", public_host="203.0.113.10",
        vm_network="10.100.0.0/16", port_min=20000, port_max=20999,
        notes="libvirt test driver, from a file: boots nothing",
    )
    assert node.pool_name == TEST_POOL, "the driver file must name the pool the engine looks for"
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}
    cluster = Cluster(tmp_path / "cluster.log", TT_Q_WORKERS="1", TT_MGMT_COOLDOWN="0")
    cluster.start()
    template = VmTemplate.objects.create(
        name="tt/busybox", path=TEMPLATE_VOLUME, compatible_engines=["libvirt"],
        size_mb=20, min_mem_mb=64, memo="test-driver template",
    )
    yield template
    code = cluster.stop()
    assert code == 0, f"the task cluster exited {code}:\n{cluster.log()[-4000:]}"
    # Each operation with work for the engine ran there, not inline (an extension is done
    # by its request).
    from operations.models import Operation

    ran = set(re.findall(r"Processed 'operations\.tasks\.run_operation' \(operation-(\d+)\)", cluster.log()))
    queued = Operation.objects.exclude(kind="env_extend").values_list("pk", flat=True)
    assert queued and {str(pk) for pk in queued} <= ran, cluster.log()[-4000:]
