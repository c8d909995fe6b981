"""The engine work of an operation's VMs run side by side: each VM's engine calls in a worker
thread, every database read and write in the operation's own thread.

A VM's cold boot is mostly the engine's: libvirt starting a QEMU and asking its monitor about
the guest's CPU, some 0.3-0.5 s a VM on this host and mostly waiting, so three VMs started one
after another launch their last guest a second after the first. Run together, they launch
within the time of one (bench/env_ready.py, docs/benchmarks.md).

A VM's work is a chain of `Stage`s: `work` calls the engine only (it gets a VmSpec made in the
operation's thread, never a row, and says its progress to a list); once it has returned, the
operation's thread says that progress on the operation, then `then` records the result (the
VM's next status, one conditional step at a time, as everywhere in vms/steps.py) and gives the
next stage, if any. So the runner's rules hold: the lease is checked by every progress
message, a lost lease fences every write, and a crash at any point leaves the statuses that
vms/steps.py promises. A worker that fails only fails its VM's chain; the others go on.

Engines whose calls may not run at once (`VmEngine.concurrent_calls`) have their VMs' stages
run in the operation's thread, one VM after another, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from engines.errors import TTError
from nodes.registry import get_engine
from operations.registry import Progress
from vms.models import Vm

# At most this many VMs' engine calls at once: each may start a QEMU.
PARALLEL = 8


@dataclass(frozen=True)
class Stage:
    """One step of a VM's work: `work(progress)` runs the engine calls (in a worker thread,
    touching no row); `then(result, progress)`, in the operation's thread, records what was
    done and returns the next stage, or None when the VM is done."""

    work: Callable[[Progress], object]
    then: Callable[[object, Progress], Stage | None]


Failures = list[tuple[str, TTError]]  # (VM name, its error)


def shares_of(vms: list[Vm], progress: Progress) -> dict[int, Progress]:
    """Each VM's share of the operation's progress, by pk: the operation's percent is the mean
    of its VMs' (which VMs run at once does not matter), each message names its VM."""
    done = dict.fromkeys((vm.pk for vm in vms), 0)

    def share_for(vm: Vm) -> Progress:
        def share(percent: int, message: str) -> None:
            done[vm.pk] = percent
            progress(int(sum(done.values()) / len(done)), f"{vm.name}: {message}")

        return share

    return {vm.pk: share_for(vm) for vm in vms}


def concurrent(vm: Vm) -> bool:
    return get_engine(vm.node).concurrent_calls


def ending_with(stage: Stage | None, last: Callable[[Progress], None]) -> Stage | None:
    """`stage`'s chain, then `last(progress)` in the operation's thread once it has ended well."""
    if stage is None:
        return None

    def then(result: object, progress: Progress) -> Stage | None:
        following = stage.then(result, progress)
        if following is None:
            last(progress)
        return ending_with(following, last)

    return Stage(work=stage.work, then=then)


def run_one(stage: Stage | None, progress: Progress) -> None:
    """One VM's chain in this thread, its engine's progress said as it comes; a failure is raised."""
    while stage is not None:
        stage = stage.then(stage.work(progress), progress)


def run(vms: list[Vm], first: Callable[[Vm], Stage | None], shares: dict[int, Progress]) -> Failures:
    """Each VM's chain, from `first(vm)` (called in this thread: it may record things and
    read rows) to its end, the VMs whose engines allow it together. Returns the VMs that
    failed with their errors (a TTError), in the order of `vms`; any other exception is
    raised once every worker has returned."""
    failed: dict[int, TTError] = {}
    chains: list[tuple[Vm, Stage]] = []
    for vm in vms:
        try:
            stage = first(vm)
            if stage is not None and not concurrent(vm):
                run_one(stage, shares[vm.pk])
            elif stage is not None:
                chains.append((vm, stage))
        except TTError as exc:
            _failed(vm, exc, shares, failed)
    if chains:
        _run_in_threads(chains, shares, failed)
    return [(vm.name, failed[vm.pk]) for vm in vms if vm.pk in failed]


def _failed(vm: Vm, exc: TTError, shares: dict[int, Progress], failed: dict[int, TTError]) -> None:
    failed[vm.pk] = exc
    shares[vm.pk](100, f"failed: {exc}")


def _run_in_threads(chains: list[tuple[Vm, Stage]], shares: dict[int, Progress],
                    failed: dict[int, TTError]) -> None:
    pending: dict[Future, tuple[Vm, Stage, list[tuple[int, str]]]] = {}
    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(chains)), thread_name_prefix="tt-vm") as pool:
        def submit(vm: Vm, stage: Stage) -> None:
            heard: list[tuple[int, str]] = []  # appended by the worker, read here once it is done
            pending[pool.submit(stage.work, lambda pct, msg: heard.append((pct, msg)))] = (vm, stage, heard)

        try:
            for vm, stage in chains:
                submit(vm, stage)
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=lambda f: pending[f][0].pk):
                    vm, stage, heard = pending.pop(future)
                    share = shares[vm.pk]
                    for percent, message in heard:
                        share(percent, message)
                    try:
                        following = stage.then(future.result(), share)
                    except TTError as exc:
                        _failed(vm, exc, shares, failed)
                        continue
                    if following is not None:
                        submit(vm, following)
        except BaseException:
            # A lost lease or a bug: nothing more starts; the `with` waits for the calls
            # under way, so the settle that follows sees what the engine really did.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
