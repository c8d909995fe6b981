"""A guest to go into, without a real one: libvirt's test driver boots nothing, so the
engine's exec and file calls are replaced by a fake that keeps files in a dict and runs a
few made-up commands. The real calls (guest agent, podman) are tested with real guests in
tests/integration; here it is everything above the engine: checks, API, portal, records.

Commands the fake knows:
    echo ARG...        prints its arguments
    fail               "boom" on stderr, exit 3
    cat                prints its stdin
    env                prints its environment (the request's env), one NAME=value a line
    sleep SECONDS      times out when SECONDS passes the request's timeout
    chunks A B...      each argument a stdout chunk through on_output; waits for `release`
                       after the first (a test follows the stream)
    bytes              prints bytes that are not UTF-8
    crash              the engine fails (guest_exec)
    noagent            nothing in the guest answers (GuestUnreachable)
Paths: anything under /missing is missing, under /root denied.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from engines.errors import EngineError, ErrorCode
from engines.guest_io import (
    ExecRequest,
    ExecResult,
    FileEntry,
    GuestFile,
    GuestPathDenied,
    GuestPathMissing,
    GuestUnreachable,
)
from engines.libvirt.engine import LibvirtEngine
from engines.specs import Feature
from vms.models import EXEC, FILES, VmTemplate

PIECE = 64 * 1024  # what the fake hands a download out in


@dataclass
class FakeGuest:
    files: dict[str, bytes] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    requests: list[ExecRequest] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    on_first_chunk: object = None  # called when an upload's first chunk reaches the engine
    chunks_seen: list[int] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)

    # --- the engine's calls ------------------------------------------------------------

    def exec(self, vm, request: ExecRequest, on_output=None) -> ExecResult:
        self.requests.append(request)
        program, *args = request.argv
        out = err = b""
        code, timed_out = 0, False
        if program == "echo":
            out = (" ".join(args) + "\n").encode()
        elif program == "fail":
            err, code = b"boom\n", 3
        elif program == "cat":
            out = request.stdin
        elif program == "env":
            out = "".join(f"{k}={v}\n" for k, v in request.env).encode()
        elif program == "sleep":
            if float(args[0]) > request.timeout:
                code, timed_out = None, True
        elif program == "chunks":
            for i, arg in enumerate(args):
                data = arg.encode()
                out += data
                if on_output:
                    on_output("stdout", data)
                if i == 0:
                    assert self.release.wait(10), "the test never released the command"
        elif program == "bytes":
            out = b"ok \xff\xfe end\n"
        elif program == "crash":
            raise EngineError("the guest agent answered garbage", code=ErrorCode.GUEST_EXEC)
        elif program == "noagent":
            raise GuestUnreachable("the guest agent does not answer")
        else:
            err, code = f"{program}: not found\n".encode(), 127
        if on_output and program != "chunks":
            for name, data in (("stdout", out), ("stderr", err)):
                if data:
                    on_output(name, data)
        self.ended.set()
        return ExecResult(exit_code=code, stdout=out, stderr=err, duration_ms=5, timed_out=timed_out)

    def _check(self, path: str) -> None:
        if path.startswith("/missing"):
            raise GuestPathMissing(f"{path}: no such file or directory")
        if path.startswith("/root"):
            raise GuestPathDenied(f"{path}: permission denied")

    def file_put(self, vm, path, chunks, *, mode=None, owner="") -> int:
        self._check(path)
        data = bytearray()
        for chunk in chunks:
            if not self.chunks_seen and self.on_first_chunk:
                self.on_first_chunk()
            self.chunks_seen.append(len(chunk))
            data += chunk
        self.files[path] = bytes(data)
        if mode is not None:
            self.modes[path] = mode
        if owner:
            self.owners[path] = owner
        return len(data)

    def file_get(self, vm, path) -> GuestFile:
        self._check(path)
        if path not in self.files:
            raise GuestPathMissing(f"{path}: no such file")
        data = self.files[path]
        pieces = (data[i:i + PIECE] for i in range(0, len(data), PIECE))
        return GuestFile(chunks=pieces, size=len(data), close=lambda: self.closed.append(path))

    def file_list(self, vm, path) -> list[FileEntry]:
        self._check(path)
        prefix = path.rstrip("/") + "/"
        return [FileEntry(name=p[len(prefix):], kind="file", size=len(d), mode=self.modes.get(p, 0o644),
                          mtime=1_700_000_000.0)
                for p, d in sorted(self.files.items()) if p.startswith(prefix) and "/" not in p[len(prefix):]]


ALL_WAYS_IN = (Feature.EXEC, Feature.FILES, Feature.CONSOLE)


def install(monkeypatch, guest: FakeGuest, features=ALL_WAYS_IN) -> FakeGuest:
    """The libvirt engine has the features and answers through `guest`."""
    monkeypatch.setattr(LibvirtEngine, "features", LibvirtEngine.features | frozenset(features))
    monkeypatch.setattr(LibvirtEngine, "exec", lambda self, vm, request, on_output=None:
                        guest.exec(vm, request, on_output))
    monkeypatch.setattr(LibvirtEngine, "file_put", lambda self, vm, path, chunks, **kw:
                        guest.file_put(vm, path, chunks, **kw))
    monkeypatch.setattr(LibvirtEngine, "file_get", lambda self, vm, path: guest.file_get(vm, path))
    monkeypatch.setattr(LibvirtEngine, "file_list", lambda self, vm, path: guest.file_list(vm, path))
    return guest


def with_ways_in(template: VmTemplate) -> VmTemplate:
    """The template declares exec and files (a guest agent in its guest)."""
    template.features = [*template.features, EXEC, FILES]
    template.save(update_fields=["features"])
    return template

