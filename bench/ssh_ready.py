"""One Debian VM until an SSH command succeeds: through TT Portal vs bare QEMU.

TT side: POST /api/envs/ (one `debian/12` VM, 512 MiB, port 22 forwarded; the task
runs inline, as TT_Q_SYNC does) with an API token, until `ssh tt@<node> -p <port>
true` succeeds with the user's key from a client in its own network namespace,
through the node's NAT. Clock: from the API call.

Bare side: `qemu-system-x86_64 -accel tcg` with the same kernel, initrd, command
line, memory and CPUs, on a qcow2 overlay of the same template volume, with a
CIDATA seed made by the same code and holding the same kind of data (hostname,
a fresh instance id, the same key), a user-mode netdev and `hostfwd` to guest
port 22, polled from the host with the same ssh command. Clock: from creating
the overlay.

Rounds alternate which side goes first; the figure is the ratio of the medians.
Everything runs on the throwaway node "bench" (see _common.py) and a throwaway
SQLite database, removed on exit; the Debian template is built once (cached in
/var/cache/ttportal). TCG guests on 2 cores are very sensitive to other load on
the machine: run it on an otherwise idle host.

    .venv/bin/python bench/ssh_ready.py [--rounds 2] [--quick]

(--quick: 1 round per side, for bench/all.py.)

It ends with one line: `ssh_ready: tt <s> s, bare <s> s, ratio <x>`.
"""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import _common as c

MEM_MB = 512
TARGET = 1.2
DEADLINE_S = 420
SSH_OPTIONS = ["-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o",
               "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=3",
               "-o", "LogLevel=ERROR"]


def make_key(work: Path) -> tuple[str, str]:
    key = work / "id_ed25519"
    c.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench@client", "-f", str(key))
    return str(key), (work / "id_ed25519.pub").read_text()


def prepare(key_line: str):
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from accounts.services import ssh_key_add, token_create
    from vms.models import VmTemplate

    opts = {k: v for k, v in c.NODE.items() if k != "name"}
    call_command("tt_prepare_node", c.NODE["name"], template=["debian"], stdout=io.StringIO(), **opts)
    template = VmTemplate.objects.get(name="debian/12")
    user = get_user_model().objects.create_user(username="bench", password="bench-pw")
    ssh_key_add(user=user, public_key=key_line)
    _token, secret = token_create(user=user, name="bench")
    return template, user, secret


def wait_for_ssh(prefix: list[str], host: str, port: int, key: str, t0: float) -> float:
    """Seconds from t0 until `true` runs over SSH; raises after DEADLINE_S."""
    last = ""
    while time.monotonic() - t0 < DEADLINE_S:
        try:
            result = subprocess.run(
                [*prefix, "ssh", *SSH_OPTIONS, "-i", key, "-p", str(port), f"tt@{host}", "true"],
                capture_output=True, text=True, timeout=20,
            )
        except subprocess.TimeoutExpired:
            last = "timed out"
            continue
        if result.returncode == 0:
            return time.monotonic() - t0
        last = result.stderr.strip()
        time.sleep(0.25)
    raise c.NoAnswer([f"ssh {host}:{port}: {last}"])


def tt_round(rnd: int, template, user, secret: str, key: str) -> float:
    from rest_framework.test import APIClient

    from envs.models import Env
    from envs.services import env_destroy

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    body = {"name": f"ssh-{rnd}", "vms": [{"name": "web", "template": template.name, "mem_mb": MEM_MB,
                                            "ports": [22]}]}
    t0 = time.monotonic()
    response = client.post("/api/envs/", body, format="json", HTTP_HOST="localhost")
    if response.status_code != 202:
        raise RuntimeError(f"POST /api/envs/ answered {response.status_code}: {response.content[:500]}")
    env = Env.objects.get(owner=user, name=f"ssh-{rnd}")
    vm = env.vms.get()
    port = vm.port_mappings.get(inner_port=22).public_port
    try:
        took = wait_for_ssh(["ip", "netns", "exec", c.NETNS], c.NODE_ADDR, port, key, t0)
    except c.NoAnswer:
        print(c.console_tail(vm.engine_name))
        raise
    done = env_destroy(env=env, by=user)
    done.refresh_from_db()
    if done.status != "succeeded":
        raise RuntimeError(f"env_destroy {done.status}: {done.error_message}")
    return took


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bare_round(rnd: int, boot: dict[str, str], key_line: str, key: str, cleanup: c.Cleanup) -> float:
    from engines.cloudinit import CloudInitSpec, write_seed

    work = Path(tempfile.mkdtemp(prefix=f"tt-bench-bare-{rnd}-"))
    cleanup.add("bare work dir", shutil.rmtree, work, ignore_errors=True)
    port = free_port()
    t0 = time.monotonic()
    overlay = work / "bare.qcow2"
    c.sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", boot["root"], str(overlay),
         f"{boot['size_mb']}M")
    seed = write_seed(CloudInitSpec(hostname="web", instance_id=f"bare-{rnd}-{time.time_ns()}",
                                    ssh_keys=(key_line.strip(),)), work / "seed.img")
    proc = subprocess.Popen([
        "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", str(MEM_MB), "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none", "-serial", f"file:{work / 'console'}",
        "-kernel", boot["kernel"], "-initrd", boot["initrd"], "-append", boot["cmdline"],
        "-drive", f"file={overlay},format=qcow2,if=virtio",
        "-drive", f"file={seed},format=raw,if=virtio,readonly=on",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:bb:01:02",
    ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cleanup.add("bare qemu", stop, proc)
    try:
        return wait_for_ssh([], "127.0.0.1", port, key, t0)
    except c.NoAnswer:
        print(c.console_tail(work / "console"))
        raise
    finally:
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def run(rounds: int) -> None:
    c.header(f"ssh_ready: one Debian VM ({MEM_MB} MiB) until SSH works, TT (API, NAT) vs bare QEMU")
    results: dict[str, list[float]] = {"tt": [], "bare": []}
    with c.Cleanup() as cleanup:
        var_dir = c.throwaway_site(cleanup)
        key, key_line = make_key(Path(var_dir))
        cleanup.add("bench node", c.remove_node)
        t = time.monotonic()
        template, user, secret = prepare(key_line)
        print(f"  node {c.NODE['name']} prepared with the Debian template in {time.monotonic() - t:.1f} s")
        pool = c.NODE["pool_name"]
        boot = {
            "kernel": c.volume_path(pool, template.kernel), "initrd": c.volume_path(pool, template.initrd),
            "root": c.volume_path(pool, template.path), "cmdline": template.cmdline,
            "size_mb": template.size_mb,
        }
        for rnd in range(1, rounds + 1):
            order = ("tt", "bare") if rnd % 2 else ("bare", "tt")
            for side in order:
                took = (tt_round(rnd, template, user, secret, key) if side == "tt"
                        else bare_round(rnd, boot, key_line, key, cleanup))
                results[side].append(took)
                print(f"  round {rnd} {side:>4}: ssh works after {took:6.2f} s")
    tt, bare = c.median(results["tt"]), c.median(results["bare"])
    print(f"  {c.verdict('ratio TT/bare (medians)', tt / bare, TARGET)}")
    print(f"ssh_ready: tt {tt:.1f} s, bare {bare:.1f} s, ratio {tt / bare:.2f}")


def main() -> None:
    run(c.count_from_args(__doc__, "--rounds", default=2, quick=1, what="rounds per side"))


if __name__ == "__main__":
    main()
