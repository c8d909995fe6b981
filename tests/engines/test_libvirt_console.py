"""The serial console log as the VM page shows it: the tail of virtlogd's file, as text."""

from __future__ import annotations

from engines.libvirt.console import read_console_tail
from engines.libvirt.engine import LibvirtEngine
from engines.node_options import NodeOptions


def test_it_reads_the_whole_log_as_text(tmp_path):
    log = tmp_path / "vm.log"
    log.write_bytes(b"\x1b[0;32mOK\x1b[0m booted\r\nTT-READY name=web ip=10.100.0.5\r\n\x07")
    assert read_console_tail(str(log), 4096) == "OK booted\nTT-READY name=web ip=10.100.0.5\n"


def test_it_keeps_only_the_last_whole_lines(tmp_path):
    log = tmp_path / "vm.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    tail = read_console_tail(str(log), 100)
    lines = tail.splitlines()
    assert lines[-1] == "line 999"
    assert all(line.startswith("line ") for line in lines)  # no half line at the top
    assert len(tail.encode()) <= 100


def test_it_survives_bytes_that_are_not_utf8(tmp_path):
    log = tmp_path / "vm.log"
    log.write_bytes(b"boot \xff\xfe ok\n")
    assert read_console_tail(str(log), 4096) == "boot \ufffd\ufffd ok\n"


def test_it_says_nothing_yet_without_a_log(tmp_path):
    assert read_console_tail(str(tmp_path / "missing.log"), 4096) == ""


def test_the_engine_reads_logs_of_a_node_on_this_host_only(tmp_path):
    (tmp_path / "tt-n-1.log").write_text("TT-READY\n")
    local = LibvirtEngine(uri="qemu:///system", options=NodeOptions(console_dir=str(tmp_path)))
    assert local.console_log("tt-n-1") == "TT-READY\n"
    remote = LibvirtEngine(uri="qemu+ssh://node2/system", options=NodeOptions(console_dir=str(tmp_path)))
    assert remote.console_log("tt-n-1") is None  # the file is on node2
    assert LibvirtEngine(uri="qemu:///system").console_log("tt-n-1") is None  # no console dir
