"""Parked restores: a saved VM's QEMU launched ahead, waiting for its memory.

libvirt 9.0 spends most of a restore before it reads the memory: every QEMU start asks
the guest CPU's ~400 properties one `qom-get` at a time (docs/benchmarks.md#saved-restores).
A parked VM has paid that already. When it is saved (`suspend_vm`: a user's suspend, a
warm spare), a holder process of its own (`python -m engines.libvirt.parking`, detached,
on its own libvirt connection) restores it from a named pipe instead of its managed-save
file, and writes into the pipe only libvirt's header, the domain XML and the first 8 bytes
of QEMU's stream. libvirt reads the header and the XML, launches QEMU (all its QMP calls)
and hands it the pipe with `migrate-incoming`; QEMU then waits for the rest, holding
~50 MB and no CPU. A start (`claim`) writes the rest of the saved file into the pipe from
the same offset and waits for the holder's restore to return (the domain running).

What stays true whatever happens:
- The managed-save file stays on disk until the restore has succeeded (the holder removes
  it then): a claim that fails destroys the parked domain, and the plain restore runs.
- While parked, the restore holds libvirt's start job on the domain: only `destroy` (and
  reads of its state) answer; the engine leaves parked domains alone (`is_parked`).
- Everything a parking leaves lives in one directory per node host (`<name>.pid`,
  `.fifo`, `.state`, `.claimed`, `.log`), so `tidy` can find and end what is left over
  (a holder whose VM is no longer suspended, a claim cut short, a holder that died).

Plain Python, no Django (engines/).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# libvirt's virQEMUSaveHeader (src/qemu/qemu_saveimage.h): magic[16], version, data_len,
# was_running, compressed, cookieOffset, unused[14]; 92 bytes, then data_len bytes (the
# domain XML and the cookie), then QEMU's migration stream.
HEADER = struct.Struct("<16s5I56x")
SAVE_MAGIC = b"LibvirtQemudSave"  # a complete image ("LibvirtQemudPart" while being written)
QEMU_MAGIC = b"QEVM"
# Written at park time with the header: a QEMU whose stream is empty, and whose writer then
# dies, spins on EOF; one that has its stream's first bytes waits for the rest, idle.
LEAD = 8
PROGRAM = "engines.libvirt.parking"
PIPE_SIZE = 1024 * 1024  # /proc/sys/fs/pipe-max-size's default


EXTS = ("pid", "fifo", "state", "claimed", "log")  # what a parking leaves in its directory


class ParkError(RuntimeError):
    pass


def stream_offset(save_path: str | os.PathLike) -> int:
    """Where QEMU's stream starts in a managed-save image (an uncompressed, complete one)."""
    with open(save_path, "rb") as f:
        raw = f.read(HEADER.size)
        if len(raw) < HEADER.size:
            raise ParkError(f"{save_path}: shorter than libvirt's save header")
        magic, _version, data_len, _running, compressed, _cookie = HEADER.unpack(raw)
        if magic != SAVE_MAGIC:
            raise ParkError(f"{save_path}: not a complete libvirt save image (magic {magic!r})")
        if compressed:
            raise ParkError(f"{save_path}: compressed (format {compressed}); only raw images are parked")
        f.seek(HEADER.size + data_len)
        if f.read(len(QEMU_MAGIC)) != QEMU_MAGIC:
            raise ParkError(f"{save_path}: no QEMU stream after libvirt's {data_len} bytes of XML")
    return HEADER.size + data_len


@dataclass(frozen=True)
class Paths:
    root: Path
    name: str

    def __getattr__(self, ext: str) -> Path:
        if ext in EXTS:
            return self.root / f"{self.name}.{ext}"
        raise AttributeError(ext)

    def remove(self, *exts: str) -> None:
        for ext in exts or EXTS:
            with contextlib.suppress(FileNotFoundError):
                getattr(self, ext).unlink()


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def holder_pid(paths: Paths) -> int | None:
    """The live holder's pid (its pid file names a process that runs this module), or None."""
    text = _read(paths.pid)
    if not text.isdigit():
        return None
    pid = int(text)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    args = cmdline.split(b"\0")
    return pid if PROGRAM.encode() in args and paths.name.encode() in args else None


def state_of(paths: Paths) -> str:
    return _read(paths.state)


def restored(paths: Paths) -> bool:
    """The holder's restore returned: the domain runs (not parked any more)."""
    return _read(paths.state).startswith("restored")


def claimed_for(paths: Paths) -> float:
    """Seconds since a claim began on the parking, 0 when none did."""
    try:
        return max(0.0, time.time() - paths.claimed.stat().st_mtime)
    except FileNotFoundError:
        return 0.0


def qemu_pid(name: str) -> int | None:
    """The VM's QEMU, from libvirt's pid file (a node on this host)."""
    try:
        return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def rss(name: str) -> int | None:
    """Bytes the VM's QEMU holds resident, None when unknown."""
    pid = qemu_pid(name)
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def names(root: Path) -> set[str]:
    """Every VM the directory has something of (live or left over)."""
    if not root.is_dir():
        return set()
    return {p.name.rsplit(".", 1)[0] for p in root.iterdir() if p.name.endswith(tuple(f".{e}" for e in EXTS))}


# --- the worker's side ----------------------------------------------------------------------


def park(root: Path, uri: str, name: str, save_path: str) -> int:
    """Start the VM's holder, detached (its own session: it outlives the worker, which is
    the point). Returns its pid. Raises ParkError when the image cannot be parked."""
    stream_offset(save_path)  # refuse now what the holder would refuse later
    root.mkdir(parents=True, exist_ok=True)
    paths = Paths(root, name)
    if holder_pid(paths) is not None:
        raise ParkError(f"{name} is parked already")
    paths.remove()
    with open(paths.log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", PROGRAM, "--uri", uri, "--name", name, "--save", save_path,
             "--dir", str(root)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, close_fds=True,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
    _write(paths.pid, str(proc.pid))
    # Reaped here while this process lives (no zombie); adopted by init if it dies first.
    threading.Thread(target=proc.wait, name=f"tt-park-{name}", daemon=True).start()
    # Known as parked (is_parked) from the return on: its command line shows once it runs.
    deadline = time.monotonic() + 5
    while holder_pid(paths) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    return proc.pid


def stop_holder(paths: Paths, *, timeout: float = 5.0) -> None:
    """End the holder (if any) and remove its files. The caller destroys the domain first
    when it is parked: the holder's restore then returns and the holder exits by itself."""
    pid = holder_pid(paths)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while holder_pid(paths) is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        if holder_pid(paths) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    paths.remove()


def feed(paths: Paths, save_path: str, *, timeout: float = 60.0) -> float:
    """A claim's first half: the rest of QEMU's stream into the pipe. Marks the parking as
    claimed first (a second claim, or a claim cut short, is then never fed twice). Returns
    the seconds it took; raises ParkError when QEMU has not taken it all within `timeout`."""
    started = time.monotonic()
    try:
        fd = os.open(paths.claimed, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ParkError(f"{paths.name}: claimed already") from None
    os.close(fd)
    state = _wait_state(paths, ("written", "parked"), 5.0)
    if state.split(" ", 1)[0] not in ("written", "parked"):
        raise ParkError(f"{paths.name}: the holder has not written the header ({state or 'no state'})")
    offset = stream_offset(save_path) + LEAD
    try:
        # A reader is there (libvirt's, and the holder's own read-write end): no wait.
        pipe = os.open(paths.fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ParkError(f"{paths.name}: its pipe does not open ({exc.strerror})") from None
    try:
        # Blocking from here on (QEMU takes each pipeful as it comes); a QEMU that stops
        # reading is caught by the alarm below, as a write that never returns would not be.
        os.set_blocking(pipe, True)
        with open(save_path, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            watchdog = threading.Timer(timeout, _unblock, (paths,))
            watchdog.daemon = True
            watchdog.start()
            try:
                while offset < size:
                    sent = os.sendfile(pipe, src.fileno(), offset, size - offset)
                    if sent == 0:
                        break
                    offset += sent
            finally:
                watchdog.cancel()
            if offset < size:
                raise ParkError(f"{paths.name}: QEMU stopped reading its memory ({offset} of {size} bytes)")
    finally:
        os.close(pipe)
    return time.monotonic() - started


def _unblock(paths: Paths) -> None:
    """A feed that hangs (QEMU no longer reads): the pipe's readers (the holder, QEMU) end,
    so the blocked write fails (EPIPE) and the claim falls back to the plain restore."""
    log.warning("%s: QEMU took no memory for too long; ending its parked restore", paths.name)
    for pid in (holder_pid(paths), qemu_pid(paths.name)):
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _wait_state(paths: Paths, wanted: tuple[str, ...], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = _read(paths.state)
        if state.split(" ", 1)[0] in wanted or time.monotonic() > deadline:
            return state
        if state.startswith("failed"):
            return state
        if holder_pid(paths) is None:  # it may have written its last word just before it ended
            return _read(paths.state) or "no holder"
        time.sleep(0.005)


def wait_restored(paths: Paths, timeout: float = 60.0) -> None:
    """A claim's second half: the holder's restore returned (the domain runs, its save file
    removed). Raises ParkError with what the holder says otherwise."""
    state = _wait_state(paths, ("restored",), timeout)
    if not state.startswith("restored"):
        raise ParkError(f"{paths.name}: the parked restore did not finish ({state or 'no state'})")


# --- the holder ----------------------------------------------------------------------------


def hold(uri: str, name: str, save_path: str, root: Path) -> int:
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    paths = Paths(root, name)
    done = threading.Event()
    outcome: list[str] = []

    def on_term(_sig, _frame):
        outcome.append("failed: stopped")
        done.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)
    with open(save_path, "rb") as src:
        offset = stream_offset(save_path)
        head = src.read(offset + LEAD)
    with contextlib.suppress(FileNotFoundError):
        paths.fifo.unlink()
    os.mkfifo(paths.fifo, 0o600)
    # Read-write: never blocks, and is a reader and a writer of its own, so libvirt's open
    # never waits on this process and the pipe never reports its end while it lives.
    pipe = os.open(paths.fifo, os.O_RDWR)
    with contextlib.suppress(OSError):  # fewer, larger reads for QEMU (the default is 64 KiB)
        fcntl.fcntl(pipe, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    conn = libvirt.open(uri)
    _write(paths.state, "launching")

    def restore() -> None:
        try:
            conn.restoreFlags(str(paths.fifo), None, 0)
        except libvirt.libvirtError as exc:
            outcome.append(f"failed: {exc.get_error_message()}")
        else:
            try:  # the memory is in the running guest now: the saved image must never restore again
                conn.lookupByName(name).managedSaveRemove(0)
                outcome.append("restored")
            except libvirt.libvirtError as exc:
                outcome.append(f"restored (save file kept: {exc.get_error_message()})")
        done.set()

    threading.Thread(target=restore, daemon=True).start()
    os.write(pipe, head)
    _write(paths.state, "written")
    started = time.monotonic()
    parked = False
    while not done.wait(0.02):
        if not parked:
            unread = struct.unpack("i", fcntl.ioctl(pipe, termios.FIONREAD, b"\0\0\0\0"))[0]
            if unread == 0:  # QEMU took its first bytes: it waits for the rest
                parked = True
                _write(paths.state, f"parked after {time.monotonic() - started:.2f} s")
    result = outcome[0] if outcome else "failed: ?"
    _write(paths.state, result)
    with contextlib.suppress(OSError):
        os.close(pipe)
    paths.remove("fifo")
    if _read(paths.pid) == str(os.getpid()):
        paths.remove("pid")
    if not result.startswith("restored") and not paths.claimed.exists():
        paths.remove("state")  # nobody waits for its word (the log keeps it until tidied)
    print(f"{time.strftime('%F %T')} {name}: {result}", flush=True)
    return 0 if result.startswith("restored") else 1


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n", 1)[0])
    parser.add_argument("--uri", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--save", required=True)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    try:
        return hold(args.uri, args.name, args.save, Path(args.dir))
    except Exception as exc:  # said in the state file, where the worker looks
        with contextlib.suppress(OSError):
            _write(Paths(Path(args.dir), args.name).state, f"failed: {exc}")
        print(f"{time.strftime('%F %T')} {args.name}: failed: {exc}", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())

