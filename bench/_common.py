"""Shared pieces of the benchmarks: names, statistics, clean-up, the client namespace,
libvirt and nftables tear-down, and an HTTP poller.

The client namespace is tests/integration/netlab.py's `ClientNet`, made here with
the benchmarks' own names and addresses.

Every name here is the benchmarks' own (node "bench", bridge ttbr-bench,
10.102.0.0/16, pools tt-bench-*, nft tables tt_bench*, netns tt-bench-client in
198.18.1.0/29), so benchmarks can run while the integration tests (node
"itest", ttbr-it, 10.101.0.0/16, tt-client in 198.18.0.0/29) or a real node do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/NAME.py`: the project is one level up
    sys.path.insert(0, str(ROOT))

from tests.integration.netlab import ClientNet  # noqa: E402  (needs ROOT on sys.path)

URI = "qemu:///system"
NODE = dict(
    name="bench", uri=URI, public_host="198.18.1.1", vm_network="10.102.0.0/16",
    bridge="ttbr-bench", pool_name="tt-bench-pool", network_name="tt-bench-net",
    port_min=31000, port_max=31999,
)
NODE_NFT_TABLE = "tt_bench"  # what nodes.registry.nft_table_name gives node "bench"
DOMAIN_PREFIX = "tt-bench-"  # engine names of the node's VMs: tt-<node>-<id>

CLIENT = ClientNet(
    netns="tt-bench-client", host_if="tt-bn-host", ns_if="tt-bn-ns",
    node_addr=NODE["public_host"], client_addrs=("198.18.1.2",), prefix=29,
)
NETNS = CLIENT.netns
HOST_IF, NS_IF = CLIENT.host_if, CLIENT.ns_if
NODE_ADDR, CLIENT_ADDR = CLIENT.node_addr, CLIENT.client_addrs[0]
NS_PREFIX = CLIENT.prefix

CONSOLE_DIR = Path(os.environ.get("TT_CONSOLE_DIR", "/var/log/ttportal/console"))
LIBVIRT_QEMU_LOGS = Path("/var/log/libvirt/qemu")
POOL_DIR = Path(os.environ.get("TT_POOL_DIR", "/var/lib/ttportal/pools"))
MIB = 1024 * 1024


# --- running ---------------------------------------------------------------


def arg_parser(doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def count_from_args(doc: str | None, option: str, *, default: int, quick: int, what: str) -> int:
    """A bench's command line when all it takes is one count (`--rounds`, `--count`, `--n`) and
    `--quick` (bench/all.py's short run): the count given, else `quick` or `default`, at least 1.
    Root is required, as by every bench that drives the node."""
    parser = arg_parser(doc)
    parser.add_argument(option, type=int, default=None, help=f"{what} (default {default})")
    parser.add_argument("--quick", action="store_true", help=f"{option} {quick} (bench/all.py)")
    args = parser.parse_args()
    given = getattr(args, option.lstrip("-").replace("-", "_"))
    count = (quick if args.quick else default) if given is None else given
    if count < 1:
        parser.error(f"{option} must be at least 1")
    require_root()
    return count


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("run me as root: libvirt's system daemon, bridges, netns and nftables need it")


def sh(*cmd: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, input=input)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


class Cleanup(contextlib.AbstractContextManager):
    """Undo steps run in reverse order on exit, on failure, on Ctrl-C and on SIGTERM/SIGHUP.

    Register an undo step *before* the action it undoes, so a half-done action is
    undone too; every step must therefore tolerate "nothing to undo".
    """

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def add(self, label: str, func: Callable[..., object], *args, **kwargs) -> None:
        self._steps.append((label, lambda: func(*args, **kwargs)))

    def __enter__(self) -> Cleanup:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        return self

    @staticmethod
    def _on_signal(signum, _frame) -> None:
        raise SystemExit(128 + signum)

    def __exit__(self, *exc) -> None:
        # A second signal during clean-up must not cut it short.
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        while self._steps:
            label, step = self._steps.pop()
            try:
                step()
            except Exception as err:
                print(f"  clean-up: {label} failed: {err}", file=sys.stderr)
        signal.signal(signal.SIGINT, signal.default_int_handler)


# --- statistics ------------------------------------------------------------


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def p95(samples: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def summary(label: str, samples: list[float]) -> str:
    return (f"{label}: n={len(samples)}  median {ms(median(samples))}  p95 {ms(p95(samples))}  "
            f"min {ms(min(samples))}  max {ms(max(samples))}")


def verdict(name: str, ratio: float, target: float) -> str:
    return f"{name} = {ratio:.3f}  (target <= {target}: {'met' if ratio <= target else 'MISSED'})"


def header(title: str) -> None:
    print(f"== {title}")
    print(f"   {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} CPUs, "
          f"{'KVM' if _kvm() else 'TCG (no usable KVM)'}")


def _kvm() -> bool:
    from engines.kvm import host_has_working_kvm

    return host_has_working_kvm()


# --- Django (throwaway database) ---------------------------------------------


def setup_django(var_dir: str, *, inline_tasks: bool = True) -> None:
    """Settings from a throwaway TT_VAR_DIR (SQLite there), no cooldown, and tasks run
    inline (or, with `inline_tasks=False`, handed to the broker for a real cluster)."""
    os.environ["TT_VAR_DIR"] = var_dir
    os.environ["DJANGO_SETTINGS_MODULE"] = "ttportal.settings"
    os.environ["TT_Q_SYNC"] = "1" if inline_tasks else "0"
    os.environ["TT_MGMT_COOLDOWN"] = "0"
    os.environ.setdefault("TT_LOG_LEVEL", "WARNING")
    for var in ("TT_DATABASE_URL", "TT_REDIS_URL"):
        os.environ.pop(var, None)
    # The benchmark's one user makes more than a user's default quota allows (8 Envs
    # alive at once in crash_recovery): quotas are not what is measured here.
    for quota in ("ENVS", "VMS", "VCPUS", "MEM_MB", "DISK_MB", "SNAPSHOTS", "PORTS"):
        os.environ.setdefault(f"TT_QUOTA_{quota}", str(10**6))
    # Nor the cap on one user's queued operations (0: none), nor the per-user rates.
    os.environ.setdefault("TT_MAX_QUEUED_OPERATIONS_PER_USER", "0")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def throwaway_site(cleanup: Cleanup, *, client: bool = True, inline_tasks: bool = True) -> str:
    """A migrated throwaway database (its folder removed at the end) and, unless told
    otherwise, the client namespace: what every benchmark starts from. The folder.
    `inline_tasks=False`: tasks go to the broker, for a real cluster (setup_django)."""
    var_dir = tempfile.mkdtemp(prefix="tt-bench-db-")
    cleanup.add("database dir", shutil.rmtree, var_dir, ignore_errors=True)
    setup_django(var_dir, inline_tasks=inline_tasks)
    if client:
        cleanup.add("client netns", destroy_client)
        create_client()
    return var_dir


# --- libvirt -------------------------------------------------------------------


def conn():
    from engines.libvirt.connection import get_connection

    return get_connection(URI)


def _missing(err) -> bool:
    from engines.libvirt.connection import is_missing

    return is_missing(err)


def remove_domains(prefix: str) -> None:
    import libvirt

    for dom in conn().listAllDomains():
        if not dom.name().startswith(prefix):
            continue
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            # Snapshot metadata and a suspended VM's saved memory go with the domain.
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                              | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
    # Serial console logs and libvirt's own QEMU logs outlive their domains
    # (also those of VMs the services destroyed).
    for folder in (CONSOLE_DIR, LIBVIRT_QEMU_LOGS):
        for log in folder.glob(f"{prefix}*.log"):
            log.unlink(missing_ok=True)


def pool_path(name: str) -> str:
    return str(POOL_DIR / name)


def define_pool(name: str):
    """A directory pool (what LibvirtEngine.init makes for a node), active."""
    import libvirt

    from engines.libvirt import xml

    try:
        pool = conn().storagePoolLookupByName(name)
    except libvirt.libvirtError as err:
        if not _missing(err):
            raise
        os.makedirs(pool_path(name), exist_ok=True)
        pool = conn().storagePoolDefineXML(xml.dir_pool_xml(name, pool_path(name)), 0)
    if not pool.isActive():
        pool.create(0)
    return pool


def remove_pool(name: str) -> None:
    """Every volume, then the pool and its directory."""
    import libvirt

    try:
        pool = conn().storagePoolLookupByName(name)
    except libvirt.libvirtError as err:
        if _missing(err):
            return
        raise
    if pool.isActive():
        pool.refresh(0)
        for vol in pool.listAllVolumes():
            vol.delete(0)
        pool.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        pool.delete(0)  # removes the (now empty) directory
    pool.undefine()
    shutil.rmtree(pool_path(name), ignore_errors=True)


def remove_network(name: str) -> None:
    import libvirt

    try:
        net = conn().networkLookupByName(name)
    except libvirt.libvirtError as err:
        if _missing(err):
            return
        raise
    if net.isActive():
        net.destroy()
    net.undefine()


def volume_path(pool: str, volume: str) -> str:
    return conn().storagePoolLookupByName(pool).storageVolLookupByName(volume).path()


def drop_nft_table(name: str) -> None:
    """The node's tables of every family the firewall makes: `ip` (NAT, egress), `ip6`
    (egress) and `bridge` (isolation)."""
    from engines.network.nftables import FAMILIES

    for family in FAMILIES:
        sh("nft", "delete", "table", family, name, check=False)


def remove_node() -> None:
    """Everything the bench node owns on this host: VMs, pool (and template), network, table."""
    remove_domains(DOMAIN_PREFIX)
    remove_pool(NODE["pool_name"])
    remove_network(NODE["network_name"])
    drop_nft_table(NODE_NFT_TABLE)
    with contextlib.suppress(Exception):
        from nodes.registry import forget_engines

        forget_engines()


# --- the client namespace ------------------------------------------------------


def create_client() -> None:
    """A client in its own network namespace reaching the node's public address over a veth."""
    try:
        CLIENT.create()
    except subprocess.CalledProcessError as err:  # fail the way `sh` does
        raise RuntimeError(f"{' '.join(err.cmd)} failed: {err.stderr.strip() or err.stdout.strip()}") from err


def destroy_client() -> None:
    CLIENT.destroy()


# --- waiting for guests' HTTP ------------------------------------------------------

# Runs in its own process (inside the client namespace when asked). It waits for one
# JSON line naming the targets, then starts a fresh GET on each pending target every
# `interval` seconds without waiting for the previous one: a guest that is not on
# the network yet makes a connect hang (ARP), and we must not sleep through its boot.
_POLLER = r"""
import json, sys, threading, time, urllib.request
job = json.loads(sys.stdin.readline())
done, lock = set(), threading.Lock()
def attempt(label, url, expect):
    try:
        body = urllib.request.urlopen(url, timeout=2).read().decode(errors="replace")
    except Exception:
        return
    if expect in body:
        with lock:
            if label not in done:
                done.add(label)
                print("READY", label, flush=True)
end = time.monotonic() + job["deadline"]
while len(done) < len(job["targets"]) and time.monotonic() < end:
    for label, url, expect in job["targets"]:
        if label not in done:
            threading.Thread(target=attempt, args=(label, url, expect), daemon=True).start()
    time.sleep(job["interval"])
print("DONE" if len(done) == len(job["targets"]) else "TIMEOUT", flush=True)
"""


class NoAnswer(RuntimeError):
    def __init__(self, missing: list[str], deadline: float):
        super().__init__(f"no HTTP answer from {', '.join(missing)} within {deadline} s")
        self.missing = missing


def console_tail(log: str | Path, chars: int = 1500) -> str:
    """The end of a guest's serial console log (a VM's engine name, or a file path)."""
    path = Path(log) if "/" in str(log) else CONSOLE_DIR / f"{log}.log"
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"    ({exc})"
    return "\n".join("    | " + line for line in text[-chars:].splitlines())


class HttpWaiter:
    """Started before the clock starts (so its own start-up is not measured);
    `wait` then says when each target first answered with its expected text."""

    def __init__(self, netns: str | None = None):
        cmd = [sys.executable, "-c", _POLLER]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def wait(self, targets: dict[str, tuple[str, str]], t0: float, *, deadline: float = 300,
             interval: float = 0.1) -> dict[str, float]:
        """targets: label -> (url, expected text). Returns label -> seconds since t0."""
        job = {"targets": [[k, u, e] for k, (u, e) in targets.items()], "deadline": deadline,
               "interval": interval}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        ready: dict[str, float] = {}
        try:
            for line in self.proc.stdout:
                word, _, label = line.strip().partition(" ")
                if word == "READY":
                    ready[label] = time.monotonic() - t0
                elif word in {"DONE", "TIMEOUT"}:
                    break
        finally:
            self.close()
        missing = sorted(set(targets) - set(ready))
        if missing:
            raise NoAnswer(missing, deadline)
        return ready

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
