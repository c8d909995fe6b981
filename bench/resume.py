"""Suspend and resume of one VM until it answers HTTP again, through the node's NAT.

One VM from the busybox template (128 MiB, port 80 forwarded) in an Env made by
env_create, on the same throwaway node, database and client namespace as
env_ready (tasks run inline). It boots once; then each round:

- `vm_suspend` (libvirt's managed save), timed from the call until the operation
  has ended; the VM must be `suspended`, its domain hold a managed save image (its
  size on disk is read) and its forwarded port no longer answer;
- `vm_start` (libvirt restores the image), timed from the call until the VM's own
  page answers through its forwarded port on 198.18.1.1, fetched from the client
  namespace (a fresh GET every 0.05 s). Alongside: the operation's own run
  (started_at..finished_at), the engine's `start_vm` (the restore), and when the
  guest answered on its own address from the host (no NAT).

Then `--cold` rounds of `vm_stop` + `vm_start` until HTTP (a reboot) to show what the
resume saves. Prints each round and ends with
`resume: <s> s, suspend: <s> s, cold start: <s> s, saved image <MB> MB` (medians).

    .venv/bin/python bench/resume.py [--rounds 5] [--cold 2] [--quick]

(--quick: 2 rounds and 1 cold one, for bench/all.py.)
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common as c
from env_ready import prepare_node

MEM_MB = 128
TARGET_S = 0.5  # issue 27 (issue 14 had 0.8 s): a resumed VM answers within 0.5 s of the start
PARK_WAIT_S = 30  # how long a round waits for the suspended VM's restore to be parked
DEADLINE_S = 300
POLL_S = 0.05
DIRECT_DEADLINE_S = 30
SAVE_DIR = Path("/var/lib/libvirt/qemu/save")  # where libvirt keeps managed save images


class EngineClock:
    """Times calls of some LibvirtEngine methods in this process (the tasks run inline
    here), so a resume splits into the engine's restore and the rest. Undone on exit."""

    def __init__(self, cleanup: c.Cleanup, *names: str) -> None:
        from engines.libvirt.engine import LibvirtEngine

        self.last: dict[str, float] = {}
        for name in names:
            raw = LibvirtEngine.__dict__[name]
            cleanup.add(f"unwrap {name}", setattr, LibvirtEngine, name, raw)
            static = isinstance(raw, staticmethod)
            wrapped = self._timed(name, raw.__func__ if static else raw)
            setattr(LibvirtEngine, name, staticmethod(wrapped) if static else wrapped)

    def _timed(self, name, func):
        def timed(*args, **kwargs):
            t = time.monotonic()
            try:
                return func(*args, **kwargs)
            finally:
                self.last[name] = time.monotonic() - t
        return timed

    def take(self) -> dict[str, float]:
        taken, self.last = self.last, {}
        return taken


def finished(op, what: str, t0: float) -> float:
    """Seconds from t0 until the (inline) operation ended; it must have succeeded."""
    op.refresh_from_db()
    took = time.monotonic() - t0
    if op.status != "succeeded":
        raise RuntimeError(f"{what} {op.status}: {op.error_code}: {op.error_message}\n{op.log}")
    return took


def op_run(op) -> float:
    return (op.finished_at - op.started_at).total_seconds()


def until_http(call, vm, url: str, expect: str) -> dict:
    """Clock from `call()` until the VM's page answers through NAT (client namespace) and,
    polled at the same time, on its own address from the host (no NAT; None when the host
    cannot reach it); the operation's times alongside."""
    nat, direct = c.HttpWaiter(netns=c.NETNS), c.HttpWaiter()
    try:
        t0 = time.monotonic()
        op = call()
        op_done = finished(op, "vm_start", t0)
        with ThreadPoolExecutor(1) as pool:
            direct_s = pool.submit(direct.wait, {"direct": (f"http://{vm.ip}/", expect)}, t0,
                                   deadline=DIRECT_DEADLINE_S, interval=POLL_S)
            try:
                http_s = nat.wait({"nat": (url, expect)}, t0, deadline=DEADLINE_S, interval=POLL_S)["nat"]
            except c.NoAnswer:
                print(f"  {vm.engine_name} did not answer; its console ends:")
                print(c.console_tail(vm.engine_name))
                raise
            try:
                direct_at = direct_s.result()["direct"]
            except c.NoAnswer:
                direct_at = None
    finally:
        nat.close()
        direct.close()
    return {"http": http_s, "op": op_done, "run": op_run(op), "direct": direct_at, "log": op.log}


def secs(x: float | None) -> str:
    return "  n/a" if x is None else f"{x:5.2f}"


def wait_parked(name: str) -> str:
    """What the VM's parking says once its QEMU waits ("parked after <s> s"), "" when the
    engine did not park it. A suspended VM is resumed later than a round's next step: the
    round gives its parking the time a real pause would."""
    from engines.libvirt import parking
    from engines.libvirt.engine import LibvirtEngine

    paths = parking.Paths(Path(LibvirtEngine.PARK_DIR), name)
    deadline = time.monotonic() + PARK_WAIT_S
    while time.monotonic() < deadline:
        state = paths.state.read_text().strip() if paths.state.exists() else ""
        if state.startswith("parked"):
            return state
        if parking.holder_pid(paths) is None:
            return ""
        time.sleep(0.02)
    raise RuntimeError(f"{name}: not parked within {PARK_WAIT_S} s ({state})")


def answers(url: str, expect: str) -> bool:
    try:
        c.HttpWaiter(netns=c.NETNS).wait({"x": (url, expect)}, time.monotonic(), deadline=1.5,
                                         interval=0.5)
    except c.NoAnswer:
        return False
    return True


def save_image(engine_name: str) -> tuple[int, int]:
    """The managed save image's size: (apparent bytes, allocated bytes)."""
    st = (SAVE_DIR / f"{engine_name}.save").stat()
    return st.st_size, st.st_blocks * 512


def run(rounds: int, cold_rounds: int) -> None:
    c.header(f"resume: one busybox VM ({MEM_MB} MiB) suspended and resumed until HTTP answers "
             "through NAT")
    with c.Cleanup() as cleanup:
        c.throwaway_site(cleanup)
        cleanup.add("bench node", c.remove_node)
        t = time.monotonic()
        _node, template, user = prepare_node()
        print(f"  node {c.NODE['name']} prepared with the busybox template in {time.monotonic() - t:.1f} s")
        clock = EngineClock(cleanup, "start_vm", "_sync_guest_clock", "suspend_vm")
        results = measure(rounds, cold_rounds, template, user, clock)
    summarise(results)


def measure(rounds: int, cold_rounds: int, template, user, clock: EngineClock) -> dict[str, list]:
    from envs.models import Env
    from envs.services import env_create
    from vms.new_vms import NewVm
    from vms.services import vm_start, vm_stop, vm_suspend

    spec = NewVm(name="vm", template=template.name, mem_mb=MEM_MB, ports=[80])
    holder: dict = {}

    def create():
        op = env_create(owner=user, by=user, name="bench-resume", vms=[spec])
        holder["vm"] = Env.objects.get(pk=op.env_id).vms.get()
        return op

    # The first boot: the Env does not exist before the call, so its URL is known only
    # after it; the NAT poller is handed the target then (its clock runs from t0 anyway).
    nat = c.HttpWaiter(netns=c.NETNS)
    t0 = time.monotonic()
    op = create()
    finished(op, "env_create", t0)
    vm = holder["vm"]
    url = f"http://{c.NODE_ADDR}:{vm.port_mappings.get(inner_port=80, protocol='tcp').public_port}/"
    expect = f"ip {vm.ip}<"
    boot = nat.wait({"vm": (url, expect)}, t0, deadline=DEADLINE_S, interval=POLL_S)["vm"]
    print(f"  booted: {vm.engine_name} ({vm.ip}, {url}) answers HTTP {boot:.2f} s after env_create")
    clock.take()

    res: dict[str, list] = {"resume": [], "suspend": [], "cold": [], "image": []}
    for rnd in range(1, rounds + 1):
        t0 = time.monotonic()
        suspend_s = finished(vm_suspend(vm=vm, by=user), "vm_suspend", t0)
        saved = clock.take().get("suspend_vm", float("nan"))
        vm.refresh_from_db()
        dom = c.conn().lookupByName(vm.engine_name)
        # A parked VM's domain is active: its QEMU waits for the saved memory (parking.py).
        parked = wait_parked(vm.engine_name)
        if vm.status != "suspended" or (dom.isActive() and not parked) or not dom.hasManagedSaveImage(0):
            raise RuntimeError(f"after vm_suspend: status {vm.status}, active {dom.isActive()}, "
                               f"managed save {dom.hasManagedSaveImage(0)}")
        size, allocated = save_image(vm.engine_name)
        if answers(url, expect):
            raise RuntimeError("the suspended VM still answers HTTP")
        r = until_http(lambda: vm_start(vm=vm, by=user), vm, url, expect)
        if "resumed from its saved memory" not in r["log"]:
            raise RuntimeError(f"vm_start did not resume:\n{r['log']}")
        eng = clock.take()
        res["resume"].append(r["http"])
        res["suspend"].append(suspend_s)
        res["image"].append(allocated)
        print(f"  round {rnd}: suspend {suspend_s:5.2f} s (managedSave {saved:4.2f} s, then "
              f"{parked or 'not parked'}), image "
              f"{size / c.MIB:6.1f} MB ({allocated / c.MIB:.1f} MB allocated) | resume: HTTP via NAT "
              f"{r['http']:5.2f} s; op ended {r['op']:4.2f} s (its run {r['run']:4.2f} s, engine "
              f"start_vm {eng.get('start_vm', float('nan')):4.2f} s of which clock sync "
              f"{eng.get('_sync_guest_clock', float('nan')):4.2f} s); guest direct {secs(r['direct'])} s")

    for rnd in range(1, cold_rounds + 1):
        t0 = time.monotonic()
        stop_op = vm_stop(vm=vm, by=user)
        stop_s = finished(stop_op, "vm_stop", t0)
        vm.refresh_from_db()
        r = until_http(lambda: vm_start(vm=vm, by=user), vm, url, expect)
        eng = clock.take()
        res["cold"].append(r["http"])
        stopped = (stop_op.log.strip().splitlines() or [""])[-1]
        print(f"  cold {rnd}: stop {stop_s:5.2f} s ({stopped}) | start: "
              f"HTTP via NAT {r['http']:5.2f} s; op ended {r['op']:4.2f} s (engine start_vm "
              f"{eng.get('start_vm', float('nan')):4.2f} s); guest direct {secs(r['direct'])} s")
    return res


def summarise(res: dict[str, list]) -> None:
    resume, suspend, cold = (c.median(res[k]) if res[k] else float("nan")
                             for k in ("resume", "suspend", "cold"))
    image_mb = c.median(res["image"]) / c.MIB
    print(f"  resume until HTTP over {len(res['resume'])} rounds: "
          + ", ".join(f"{x:.2f}" for x in res["resume"]) + f" s; VM memory {MEM_MB} MiB")
    if res["cold"]:
        print("  cold start until HTTP: " + ", ".join(f"{x:.2f}" for x in res["cold"])
              + f" s; resume saves {cold - resume:.2f} s ({resume / cold:.0%} of a cold start)")
    met = "met" if resume <= TARGET_S else "MISSED"
    print(f"  resume median {resume:.2f} s until HTTP (target <= {TARGET_S} s: {met})")
    print(f"resume: {resume:.2f} s, suspend: {suspend:.2f} s, cold start: {cold:.2f} s, "
          f"saved image {image_mb:.0f} MB")


def main() -> None:
    parser = c.arg_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=None, help="suspend/resume rounds (default 5)")
    parser.add_argument("--cold", type=int, default=None, help="stop/start rounds to compare (default 2)")
    parser.add_argument("--quick", action="store_true", help="2 rounds and 1 cold (bench/all.py)")
    args = parser.parse_args()
    args.rounds = (2 if args.quick else 5) if args.rounds is None else args.rounds
    args.cold = (1 if args.quick else 2) if args.cold is None else args.cold
    if args.rounds < 1 or args.cold < 0:
        parser.error("--rounds must be at least 1 and --cold at least 0")
    c.require_root()
    if not os.path.isdir(SAVE_DIR):
        print(f"  note: {SAVE_DIR} is missing; the save image's size will not be found")
    run(args.rounds, args.cold)


if __name__ == "__main__":
    main()
