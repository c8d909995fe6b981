"""The Debian template: how long it takes to build (cold and cached), the least memory it
boots to SSH in, and where its boot time goes (systemd-analyze inside the guest).

Build: `debian_builder.build` into an empty cache directory (cold: mmdebstrap fetches
and installs every package from the configured mirror, then the ext4 image is made
and converted), then again into the same directory (cached: the fingerprint matches
and nothing is rebuilt).

Memory: the built template booted on bare QEMU (TCG, one vCPU, the same seed code as
a TT VM: hostname, instance id, an SSH key), from the most memory to the least, until
a size no longer reaches a working SSH login within the deadline. The first boot also
reports `systemd-analyze` and its `blame`'s top entries.

    .venv/bin/python bench/debian_guest.py [--sizes 512,384,320,256,192] [--reproduce]

It prints `debian_build: cold <s> s, cached <s> s` and `debian_min_mem: <n> MiB ...`.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import _common as c
from ssh_ready import SSH_OPTIONS, make_key

DEADLINE_S = 300


def build_times(cache: Path, *, reproduce: bool):
    from engines.libvirt import debian_builder

    t = time.monotonic()
    built = debian_builder.build(cache)
    cold = time.monotonic() - t
    t = time.monotonic()
    again = debian_builder.build(cache)
    cached = time.monotonic() - t
    assert again == built
    print(f"debian_build: cold {cold:.1f} s, cached {cached:.2f} s")
    if reproduce:  # a second cold build elsewhere: the same bytes?
        other = debian_builder.build(cache.with_name("cache-again"))
        same = {name: digest(getattr(built, name)) == digest(getattr(other, name))
                for name in ("kernel", "initrd", "rootfs")}
        print("  reproducible: " + ", ".join(f"{k} {'same' if v else 'DIFFERENT'}" for k, v in same.items()))
    return built


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def boot(built, mem_mb: int, key: str, key_line: str, work: Path
         ) -> tuple[float | None, subprocess.Popen, int]:
    """Boot on bare QEMU with `mem_mb`; (seconds to SSH or None, the process, its SSH port)."""
    from ssh_ready import free_port

    from engines.cloudinit import CloudInitSpec, write_seed

    overlay = work / f"root-{mem_mb}.qcow2"
    c.sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(built.rootfs), str(overlay))
    seed = write_seed(CloudInitSpec(hostname="probe", instance_id=f"probe-{mem_mb}-{time.time_ns()}",
                                    ssh_keys=(key_line.strip(),)), work / f"seed-{mem_mb}.img")
    port = free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen([
        "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", str(mem_mb), "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none", "-serial", f"file:{work / f'console-{mem_mb}'}",
        "-kernel", str(built.kernel), "-initrd", str(built.initrd), "-append", built.cmdline,
        "-drive", f"file={overlay},format=qcow2,if=virtio",
        "-drive", f"file={seed},format=raw,if=virtio,readonly=on",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
    ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while time.monotonic() - t0 < DEADLINE_S and proc.poll() is None:
        if ssh(port, key, "true").returncode == 0:
            return time.monotonic() - t0, proc, port
        time.sleep(0.5)
    return None, proc, port


def ssh(port: int, key: str, command: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["ssh", *SSH_OPTIONS, "-i", key, "-p", str(port), "tt@127.0.0.1", command],
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, 255, "", "timed out")


def profile(port: int, key: str) -> None:
    """systemd-analyze inside the guest, once its boot has finished (it refuses before)."""
    end = time.monotonic() + DEADLINE_S
    while True:
        analyze = ssh(port, key, "systemd-analyze")
        if analyze.returncode == 0 or time.monotonic() > end:
            break
        time.sleep(2)
    print("  " + (analyze.stdout or analyze.stderr).strip().replace("\n", "\n  "))
    blame = ssh(port, key, "systemd-analyze blame | head -n 10").stdout.strip()
    print("  slowest units:\n    " + blame.replace("\n", "\n    "))
    failed = ssh(port, key, "systemctl --failed --no-legend").stdout.strip()
    print(f"  failed units: {failed or 'none'}")
    if failed:
        why = ssh(port, key, "sudo grep -E 'WARNING|ERROR|Traceback' /var/log/cloud-init.log | tail -n 12")
        print("  cloud-init's complaints:\n    " + why.stdout.strip().replace("\n", "\n    "))


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def run(sizes: list[int], *, reproduce: bool) -> None:
    c.header("debian_guest: the Debian template's build time, least memory and boot profile")
    with c.Cleanup() as cleanup:
        work = Path(tempfile.mkdtemp(prefix="tt-bench-debian-"))
        cleanup.add("work dir", shutil.rmtree, work, ignore_errors=True)
        var_dir = work / "var"
        var_dir.mkdir()
        c.setup_django(str(var_dir))
        built = build_times(work / "cache", reproduce=reproduce)
        key, key_line = make_key(work)
        booted, failed = [], None
        for mem_mb in sorted(sizes, reverse=True):
            took, proc, port = boot(built, mem_mb, key, key_line, work)
            cleanup.add(f"qemu {mem_mb} MiB", stop, proc)
            if took is None:
                print(f"  {mem_mb:4d} MiB: no SSH login within {DEADLINE_S} s; the console ends:")
                print(c.console_tail(work / f"console-{mem_mb}", 600))
                stop(proc)
                failed = mem_mb
                break
            print(f"  {mem_mb:4d} MiB: SSH works after {took:5.1f} s")
            if not booted:  # the first (largest) boot: where the time goes
                profile(port, key)
            booted.append(mem_mb)
            stop(proc)
    least = min(booted) if booted else None
    tail = f", not at {failed} MiB" if failed else " (the least size tried)"
    print(f"debian_min_mem: {least} MiB boots to a working SSH login{tail}")


def main() -> None:
    parser = c.arg_parser(__doc__)
    parser.add_argument("--sizes", default="512,384,320,256,192",
                        help="memory sizes to try, MiB, comma-separated (default 512,384,320,256,192)")
    parser.add_argument("--reproduce", action="store_true",
                        help="also build a second time from scratch and compare the bytes (~1 min more)")
    args = parser.parse_args()
    c.require_root()
    run([int(s) for s in args.sizes.split(",")], reproduce=args.reproduce)


if __name__ == "__main__":
    main()
