"""An Env of 3 VMs ready through TT Portal vs the same 3 guests without TT.

TT side: env_create (3 VMs from the busybox template, 128 MiB, port 80
forwarded; the task runs inline, as TT_Q_SYNC does) until each VM answers HTTP
with its own address through its forwarded public port, polled from a client
in its own network namespace. Clock: from the env_create call.

libvirt side (like for like): the same 3 guests from the very domain XML TT's engine
writes (same devices, kernel command line, bridge, DHCP entry, NAT and firewall
elements, all made before the clock by the engine's own create_vm), then started by
plain libvirt calls, the 3 `virDomainCreate` at once, until each answers HTTP through
its forwarded port from the client namespace. Clock: from the first start call. Its
ratio to TT measures TT's control plane alone.

Bare side (the minimal guest): 3 `qemu-system-x86_64 -accel tcg` with the same kernel,
initrd, command line and memory, each on its own qcow2 overlay of the same template
volume, with a user-mode netdev (its DHCP gives the guest 10.0.2.15) and
`hostfwd` from a local port to guest port 80, polled from the host until each
answers with its DHCP address. Clock: from creating the first overlay.

"launched after": when the last of the 3 QEMU processes was started (its start time in
/proc, to 10 ms), from each side's clock: for TT that is the control plane's own time
until the hypervisor has the last VM; "start returned" is when the call(s) that start
them returned (for TT, env_create; libvirt's start also waits for QEMU to come up and
answer its guest-CPU queries). "boot" is, per guest, from its QEMU's start to its first
HTTP answer.

All sides are polled by the same poller (started before the clock), and the
rounds rotate which side goes first. Everything runs on a throwaway node
"bench" (bridge ttbr-bench, 10.102.0.0/16, pool tt-bench-pool, nft table
tt_bench, client netns tt-bench-client at 198.18.1.0/29) and a throwaway
SQLite database; all of it is removed on exit. TCG guests on 2 cores are very
sensitive to other load on the machine: run it on an otherwise idle host.

    .venv/bin/python bench/env_ready.py [--rounds 4]

It prints each round, the medians, and three verdicts (ok or MISSED): TT/libvirt (same
domain XML) <= 1.1, TT/bare (minimal guest) <= 1.2, TT launched after <= 0.5 s; then
`ratio <TT/bare>`.

With `--engine docker`: an Env of 3 containers from the busybox image on a docker
node (`benchd`: bridge ttbr-benchd, 10.104.0.0/16, nft table tt_benchd, podman's
Docker API), until each answers HTTP with its own address through its forwarded
port from the client namespace, against 3 bare `podman run -d -p 127.0.0.1:H:80`
of the same image until each answers on its published port. It ends with the
same `ratio <x>` line.

    .venv/bin/python bench/env_ready.py --engine docker [--rounds 4]

With `--warm`: the same Env from a full warm pool against the same Env cold, both
through a real task cluster (bench/_warm.py says how); it ends with one line
`warm: <s> s, cold: <s> s, ratio <x>`.

    .venv/bin/python bench/env_ready.py --warm [--rounds 3] [--keep saved|paused]

(`--keep`: that kind of spare only, and the last line is its; without it, saved then
paused spares, and the last line is the paused pool's.)

--quick (any of the three): 2 rounds per side, for bench/all.py.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common as c

VMS = 3
MEM_MB = 128
TARGET = 1.2  # TT against the minimal bare guest (and docker against bare podman)
TARGET_LIKE = 1.1  # TT against the same domain XML started by plain libvirt calls
TARGET_LAUNCHED_S = 0.5  # TT's control plane until the last QEMU is started
DEADLINE_S = 300
SLIRP_GUEST_IP = "10.0.2.15"
CLK_TCK = os.sysconf("SC_CLK_TCK")
QEMU_PID_DIR = Path("/run/libvirt/qemu")  # libvirt's QEMU driver: <domain>.pid


def clocks() -> tuple[float, float]:
    """(monotonic, boot time) now: /proc counts process start times on the second."""
    return time.monotonic(), time.clock_gettime(time.CLOCK_BOOTTIME)


def started_after(pid: int, t0_boot: float) -> float:
    """When process `pid` started, in seconds after `t0_boot` (to 1/CLK_TCK s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[19]) / CLK_TCK - t0_boot  # field 22, starttime, in ticks since boot


def domain_started_after(name: str, t0_boot: float) -> float:
    return started_after(int((QEMU_PID_DIR / f"{name}.pid").read_text()), t0_boot)


def prepare_node():
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from nodes.models import Node
    from vms.models import VmTemplate

    opts = {k: v for k, v in c.NODE.items() if k != "name"}
    call_command("tt_prepare_node", c.NODE["name"], template=True, stdout=io.StringIO(), **opts)
    node = Node.objects.get(name=c.NODE["name"])
    template = VmTemplate.objects.get(name="tt/busybox")
    user = get_user_model().objects.create_user(username="bench", password="bench-pw")
    return node, template, user


def tt_round(rnd: int, template, user, mem_mb: int = MEM_MB) -> dict:
    from envs.models import Env
    from envs.services import env_create, env_destroy
    from vms.new_vms import NewVm

    waiter = c.HttpWaiter(netns=c.NETNS)
    specs = [NewVm(name=f"vm{i}", template=template.name, mem_mb=mem_mb, ports=[80]) for i in range(VMS)]
    t0, t0_boot = clocks()
    op = env_create(owner=user, by=user, name=f"bench-{rnd}", vms=specs)
    op.refresh_from_db()
    created = time.monotonic() - t0
    if op.status != "succeeded":
        waiter.close()
        raise RuntimeError(f"env_create {op.status}: {op.error_code}: {op.error_message}\n{op.log}")
    env = Env.objects.get(pk=op.env_id)
    vms = {vm.name: vm for vm in env.vms.order_by("name")}
    targets = {}
    for name, vm in vms.items():
        port = vm.port_mappings.get(inner_port=80, protocol="tcp").public_port
        targets[name] = (f"http://{c.NODE_ADDR}:{port}/", f"ip {vm.ip}<")
    try:
        ready = waiter.wait(targets, t0, deadline=DEADLINE_S)
    except c.NoAnswer as exc:
        for name in exc.missing:
            vm = vms[name]
            print(f"  {name} ({vm.engine_name}, {vm.mac}, {vm.ip}) did not answer; its console ends:")
            print(c.console_tail(vm.engine_name))
        raise
    # A QEMU's start time (libvirt's docker engine has none here: the docker side skips it).
    spawned = ({name: domain_started_after(vm.engine_name, t0_boot) for name, vm in vms.items()}
               if template.kernel else {})
    done = env_destroy(env=env, by=user)
    done.refresh_from_db()
    if done.status != "succeeded":
        raise RuntimeError(f"env_destroy {done.status}: {done.error_message}")
    return result(ready, returned=created, spawned=spawned)


def result(ready: dict[str, float], *, returned: float, spawned: dict[str, float]) -> dict:
    """A round: when all answered, when the start call(s) returned, when the last QEMU
    started, each guest's answer, and each guest's boot (its QEMU's start to its answer)."""
    return {"total": max(ready.values()), "started": returned,
            "launched": max(spawned.values()) if spawned else returned, "each": ready,
            "boot": {name: ready[name] - at for name, at in spawned.items()}}


def like_for_like_specs(template, rnd: int) -> list:
    """The 3 guests as TT would make them (cold, 1 vCPU, 128 MiB, the template's disk, port
    80 forwarded), with identities of their own: names the node's clean-up removes, the
    node's port prefix (so its bridge rules bind them), the top of its address range and
    of its port range, and an Env id no TT Env has."""
    from engines.specs import PortSpec, VmSpec

    out = []
    for i in range(VMS):
        n = 9000 + 10 * rnd + i
        out.append(VmSpec(
            id=n, name=f"{c.DOMAIN_PREFIX}{n}", template=template.to_spec(), cpu_num=1, mem_mb=MEM_MB,
            disk_mb=template.min_disk_mb, mac=f"52:54:00:bb:{rnd % 256:02x}:{i:02x}",
            ip=f"10.102.254.{(10 * rnd + i) % 250 + 2}", ports=(PortSpec("tcp", 80, c.NODE["port_max"] - i),),
            env_id=10**9 + rnd,
        ))
    return out


def libvirt_round(rnd: int, template, cleanup: c.Cleanup) -> dict:
    """The same 3 guests from TT's own domain XML and wiring (made before the clock), each
    started by one plain libvirt call, the 3 at once."""
    from nodes.models import Node
    from nodes.registry import get_engine

    engine = get_engine(Node.objects.get(name=c.NODE["name"]))
    specs = like_for_like_specs(template, rnd)
    cleanup.add("like-for-like VMs", remove_like_for_like, engine, specs)
    for spec in specs:
        engine.create_vm(spec)  # image, domain definition, DHCP entry, firewall elements
    domains = [c.conn().lookupByName(spec.name) for spec in specs]
    names = {spec.name: f"vm{i}" for i, spec in enumerate(specs)}
    waiter = c.HttpWaiter(netns=c.NETNS)
    t0, t0_boot = clocks()
    with ThreadPoolExecutor(max_workers=VMS) as pool:
        list(pool.map(lambda dom: dom.create(), domains))
    returned = time.monotonic() - t0
    targets = {names[spec.name]: (f"http://{c.NODE_ADDR}:{spec.ports[0].public_port}/", f"ip {spec.ip}<")
               for spec in specs}
    try:
        ready = waiter.wait(targets, t0, deadline=DEADLINE_S)
    except c.NoAnswer as exc:
        for spec in specs:
            if names[spec.name] in exc.missing:
                print(f"  {names[spec.name]} ({spec.name}, {spec.mac}, {spec.ip}) did not answer; "
                      "its console ends:")
                print(c.console_tail(spec.name))
        raise
    spawned = {names[spec.name]: domain_started_after(spec.name, t0_boot) for spec in specs}
    remove_like_for_like(engine, specs)
    return result(ready, returned=returned, spawned=spawned)


def remove_like_for_like(engine, specs) -> None:
    for spec in specs:
        try:
            engine.destroy_vm(spec)
        except Exception as exc:  # clean-up goes on; the node's removal takes the rest
            print(f"  clean-up: {spec.name}: {exc}")


def bare_podman_round(rnd: int, image: str, cleanup: c.Cleanup) -> dict:
    """3 plain `podman run`s of the same image, each port 80 published on the host."""
    names = [f"tt-bench-bare-{rnd}-{i}" for i in range(VMS)]
    cleanup.add("bare containers", remove_containers, names)
    ports = [free_port() for _ in range(VMS)]
    waiter = c.HttpWaiter()
    t0 = time.monotonic()
    for name, port in zip(names, ports, strict=True):
        c.sh("podman", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:80", image)
    started = time.monotonic() - t0
    targets = {name: (f"http://127.0.0.1:{port}/", "<h1>") for name, port in zip(names, ports, strict=True)}
    ready = waiter.wait(targets, t0, deadline=DEADLINE_S)
    remove_containers(names)
    return result(ready, returned=started, spawned={})


def remove_containers(names: list[str]) -> None:
    c.sh("podman", "rm", "-f", "-t", "0", *names, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bare_round(rnd: int, boot: dict[str, str], cleanup: c.Cleanup) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"tt-bench-bare-{rnd}-"))
    procs: list[subprocess.Popen] = []
    cleanup.add("bare work dir", shutil.rmtree, work, ignore_errors=True)
    cleanup.add("bare qemu processes", stop_all, procs)
    ports = [free_port() for _ in range(VMS)]
    waiter = c.HttpWaiter()
    t0, t0_boot = clocks()
    for i, port in enumerate(ports):
        overlay = work / f"bare{i}.qcow2"
        c.sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", boot["root"], str(overlay))
        procs.append(subprocess.Popen([
            "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", str(MEM_MB), "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-serial", f"file:{work / f'bare{i}.console'}",
            "-kernel", boot["kernel"], "-initrd", boot["initrd"], "-append", boot["cmdline"],
            "-drive", f"file={overlay},format=qcow2,if=virtio",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:80",
            "-device", f"virtio-net-pci,netdev=n0,mac=52:54:00:bb:00:{i + 2:02x}",
        ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    started = time.monotonic() - t0
    expect = f"ip {SLIRP_GUEST_IP}<"  # the address slirp's DHCP gave it
    targets = {f"bare{i}": (f"http://127.0.0.1:{port}/", expect) for i, port in enumerate(ports)}
    try:
        ready = waiter.wait(targets, t0, deadline=DEADLINE_S)
    except c.NoAnswer as exc:
        for name in exc.missing:
            i = int(name.removeprefix("bare"))
            print(f"  {name} did not answer; its console ends:")
            print(c.console_tail(work / f"bare{i}.console"))
            if procs[i].poll() is not None:
                print(f"  its qemu exited {procs[i].returncode}: {procs[i].stderr.read().strip()}")
        raise
    spawned = {f"bare{i}": started_after(p.pid, t0_boot) for i, p in enumerate(procs)}
    stop_all(procs)
    shutil.rmtree(work, ignore_errors=True)
    return result(ready, returned=started, spawned=spawned)


def stop_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


def show(rnd: int, side: str, result: dict) -> None:
    each = "  ".join(f"{k} {v:5.2f}" for k, v in sorted(result["each"].items()))
    launched = (f"launched after {result['launched']:5.2f} s, start returned after {result['started']:5.2f} s"
                if result["boot"] else f"launched after {result['started']:5.2f} s")
    print(f"  round {rnd} {side:>7}: all {VMS} answer HTTP after {result['total']:6.2f} s  "
          f"({launched}; each: {each})")


def run_docker(rounds: int) -> None:
    import _docker as d

    c.header(f"env_ready --engine docker: Env of {VMS} busybox containers until HTTP answers, "
             "TT vs bare podman run")
    results: dict[str, list[dict]] = {"tt": [], "bare": []}
    with c.Cleanup() as cleanup:
        c.throwaway_site(cleanup)
        cleanup.add("bench docker node", d.remove_node)
        t = time.monotonic()
        _node, template = d.prepare_node()
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.create_user(username="bench", password="bench-pw")
        print(f"  node {d.NODE['name']} prepared with image {template.path} in {time.monotonic() - t:.1f} s")
        for rnd in range(1, rounds + 1):
            order = ("tt", "bare") if rnd % 2 else ("bare", "tt")
            for side in order:
                result = (tt_round(rnd, template, user, mem_mb=32) if side == "tt"
                          else bare_podman_round(rnd, template.path, cleanup))
                results[side].append(result)
                show(rnd, side, result)
    summarise(results, "bare podman")


SIDES = ("tt", "libvirt", "bare")


def run(rounds: int) -> None:
    c.header(f"env_ready: Env of {VMS} busybox VMs ({MEM_MB} MiB) until HTTP answers, TT vs the same "
             "domain XML on plain libvirt vs bare QEMU")
    results: dict[str, list[dict]] = {side: [] for side in SIDES}
    with c.Cleanup() as cleanup:
        c.throwaway_site(cleanup)
        cleanup.add("bench node", c.remove_node)
        t = time.monotonic()
        _node, template, user = prepare_node()
        print(f"  node {c.NODE['name']} prepared with the busybox template in {time.monotonic() - t:.1f} s")
        pool = c.NODE["pool_name"]
        boot = {
            "kernel": c.volume_path(pool, template.kernel), "initrd": c.volume_path(pool, template.initrd),
            "root": c.volume_path(pool, template.path), "cmdline": template.cmdline,
        }
        print(f"  kernel command line (all sides): {template.cmdline}")
        for rnd in range(1, rounds + 1):
            first = (rnd - 1) % len(SIDES)  # each side goes first in turn
            for side in SIDES[first:] + SIDES[:first]:
                if side == "tt":
                    result = tt_round(rnd, template, user)
                elif side == "libvirt":
                    result = libvirt_round(rnd, template, cleanup)
                else:
                    result = bare_round(rnd, boot, cleanup)
                results[side].append(result)
                show(rnd, side, result)
    summarise_qemu(results)


def summarise(results: dict[str, list[dict]], bare_name: str) -> None:
    tt = [r["total"] for r in results["tt"]]
    bare = [r["total"] for r in results["bare"]]
    for side, totals in (("TT", tt), ("bare", bare)):
        listed = ", ".join(f"{x:.2f}" for x in totals)
        print(f"  median {side:<4} {c.median(totals):6.2f} s  over {len(totals)} rounds: {listed}")
    # Each round's two sides run back to back, so their ratio is less exposed to
    # the machine's speed drifting between rounds than the ratio of medians.
    paired = [t / b for t, b in zip(tt, bare, strict=True)]
    listed = ", ".join(f"{x:.2f}" for x in paired)
    print(f"  per-round ratios TT/bare: {listed}; their median {c.median(paired):.3f}")
    print(f"  {c.verdict(f'ratio TT/{bare_name} (medians)', c.median(tt) / c.median(bare), TARGET)}")
    print(f"ratio {c.median(tt) / c.median(bare):.2f}")


def ok(name: str, value: float, target: float, unit: str = "") -> str:
    return f"{name} = {value:.3f}{unit}  (target <= {target}{unit}: {'met' if value <= target else 'MISSED'})"


def summarise_qemu(results: dict[str, list[dict]]) -> None:
    label = {"tt": "TT", "libvirt": "libvirt (same domain XML)", "bare": "bare QEMU (minimal guest)"}
    median = {side: c.median([r["total"] for r in rounds]) for side, rounds in results.items()}
    for side, rounds in results.items():
        listed = ", ".join(f"{r['total']:.2f}" for r in rounds)
        boots = [b for r in rounds for b in r["boot"].values()]
        print(f"  median {label[side]:<26} {median[side]:6.2f} s  over {len(rounds)} rounds: {listed}; "
              f"launched after {c.median([r['launched'] for r in rounds]):.2f} s, start returned after "
              f"{c.median([r['started'] for r in rounds]):.2f} s; boot per guest (QEMU started -> HTTP) "
              f"{c.median(boots):.2f} s")
    # Each round's sides run back to back, so their ratio is less exposed to the
    # machine's speed drifting between rounds than the ratio of medians.
    for other in ("libvirt", "bare"):
        paired = [t["total"] / o["total"] for t, o in zip(results["tt"], results[other], strict=True)]
        print(f"  per-round ratios TT/{other}: {', '.join(f'{x:.2f}' for x in paired)}; "
              f"their median {c.median(paired):.3f}")
    launched = c.median([r["launched"] for r in results["tt"]])
    like, minimal = median["tt"] / median["libvirt"], median["tt"] / median["bare"]
    print(f"  {ok('ratio TT/libvirt, same domain XML (medians)', like, TARGET_LIKE)}")
    print(f"  {ok('ratio TT/bare QEMU, minimal guest (medians)', minimal, TARGET)}")
    print(f"  {ok('TT launched after (median)', launched, TARGET_LAUNCHED_S, ' s')}")
    print(f"ratio {median['tt'] / median['bare']:.2f}")


def main() -> None:
    parser = c.arg_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=None, help="rounds per side, at least 2 (default 4; "
                        "3 with --warm)")
    parser.add_argument("--quick", action="store_true", help="2 rounds per side (bench/all.py)")
    parser.add_argument("--warm", action="store_true", help="a full warm pool against cold, on QEMU")
    parser.add_argument("--keep", choices=("saved", "paused"), default=None,
                        help="with --warm: only spares kept this way (default: saved, then paused)")
    parser.add_argument("--engine", choices=("qemu", "docker"), default="qemu",
                        help="qemu: VMs against bare QEMU; docker: containers against bare podman run")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 3 if args.warm else 4)
    if rounds < 2:
        parser.error("--rounds must be at least 2")
    if args.warm and args.engine != "qemu":
        parser.error("--warm is for the qemu engine (docker cannot save a container's memory)")
    if args.keep and not args.warm:
        parser.error("--keep is for --warm (how the warm pool keeps its spares)")
    c.require_root()
    if args.warm:
        from _warm import KEEPS, run_warm

        run_warm(rounds, (args.keep,) if args.keep else KEEPS)
    else:
        (run_docker if args.engine == "docker" else run)(rounds)


if __name__ == "__main__":
    main()
