"""Fixtures for the Firecracker driver's tests: the fake firecracker (and jailer) as the
node's binaries, a host network that records instead of touching the host, a tiny template.

Nothing here boots or needs KVM, root networking or a real firecracker. Every
process the fake ran is ended after each test, whatever the test did.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engines.firecracker.engine import FirecrackerEngine
from engines.specs import TemplateSpec
from tests.engines.firecracker.support import (
    FAKE_FIRECRACKER,
    FAKE_JAILER,
    KERNEL_FILE,
    TEMPLATE_BYTES,
    TEMPLATE_FILE,
    FakeHost,
    fake_is_running,
    make_engine,
    write_wrapper,
)


@pytest.fixture
def fake_host(settings, monkeypatch) -> Iterator[FakeHost]:
    # A short directory: unix socket paths hold 107 bytes, pytest's tmp_path may not fit.
    root = Path(tempfile.mkdtemp(prefix="ttfc-", dir="/tmp"))
    bin_dir, pool = root / "bin", root / "pool"
    bin_dir.mkdir()
    pool.mkdir()
    write_wrapper(bin_dir / "firecracker", FAKE_FIRECRACKER)
    write_wrapper(bin_dir / "jailer", FAKE_JAILER)
    host = FakeHost(root=root, bin_dir=bin_dir, pool=pool, log=root / "calls.jsonl",
                    links_file=root / "links.json", spec=str(settings.TT_FIRECRACKER_SPEC))
    monkeypatch.setenv("FAKE_FC_SPEC", host.spec)
    monkeypatch.setenv("FAKE_FC_LOG", str(host.log))
    monkeypatch.setenv("FAKE_FC_TAPS", str(host.links_file))
    monkeypatch.delenv("FAKE_FC_GUEST", raising=False)
    (pool / TEMPLATE_FILE).write_bytes(TEMPLATE_BYTES)
    os.truncate(pool / TEMPLATE_FILE, 2 * 1024 * 1024)  # a 2 MiB sparse "filesystem"
    (pool / KERNEL_FILE).write_bytes(b"\x7fELF a kernel, as far as the fake can tell\n")
    yield host
    for pid in host.pids():
        if fake_is_running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def engine(fake_host) -> FirecrackerEngine:
    return make_engine(fake_host)


@pytest.fixture
def template() -> TemplateSpec:
    return TemplateSpec(name="fc/tiny", path=TEMPLATE_FILE, size_mb=2, kernel=KERNEL_FILE,
                        cmdline="console=ttyS0 reboot=k panic=1 pci=off")

