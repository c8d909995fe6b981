"""A small qemu-ga in this process, answering `libvirt_qemu.qemuAgentCommand` as the real one
does over libvirt, on this host: `guest-exec` spawns real processes (so the /bin/sh wrapper
of engines/libvirt/guest_agent.py really runs), `guest-file-*` opens real files with the C
calls qemu-ga makes (a directory opens, and fails on its first read). Its failures are
libvirt errors worded as libvirt words qemu-ga's.

Install it with `FakeGuestAgent.install(monkeypatch)`; it records each command it was sent.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
from dataclasses import dataclass, field

import libvirt
import libvirt_qemu

# What one libvirt RPC string may carry (REMOTE_STRING_MAX): a longer command fails.
MESSAGE_MAX = 4 * 1024 * 1024
# fopen() modes as qemu-ga maps them to open(2) flags.
OPEN_FLAGS = {
    "r": os.O_RDONLY, "r+": os.O_RDWR, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "w+": os.O_RDWR | os.O_CREAT | os.O_TRUNC, "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND,
}
WHENCE = {"set": os.SEEK_SET, "cur": os.SEEK_CUR, "end": os.SEEK_END}


def libvirt_error(message: str, code: int = libvirt.VIR_ERR_INTERNAL_ERROR) -> libvirt.libvirtError:
    exc = libvirt.libvirtError(message)
    exc.err = (code, libvirt.VIR_FROM_QEMU, message, 2, None, None, None, 0, 0)
    return exc


def command_failed(command: str, reason: str) -> libvirt.libvirtError:
    return libvirt_error(f"internal error: unable to execute QEMU agent command '{command}': {reason}")


@dataclass
class Process:
    popen: subprocess.Popen
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    readers: list[threading.Thread] = field(default_factory=list)


class FakeGuestAgent:
    def __init__(self):
        self.connected = True
        self.sent: list[dict] = []  # every command, as sent
        self.files: dict[int, int] = {}  # handle: fd
        self.processes: dict[int, Process] = {}
        self.denied: set[str] = set()  # paths whose open fails with EACCES
        self.stage_modes: list[int] = []  # the mode of an upload's staging directory, as written into
        self._next_handle = 1000

    def install(self, monkeypatch) -> FakeGuestAgent:
        monkeypatch.setattr(libvirt_qemu, "qemuAgentCommand", self.command)
        return self

    def commands(self, name: str) -> list[dict]:
        return [c.get("arguments", {}) for c in self.sent if c["execute"] == name]

    def command(self, dom, text: str, timeout: int, flags: int) -> str:
        if len(text) > MESSAGE_MAX:
            raise libvirt_error("too large message", libvirt.VIR_ERR_RPC)
        message = json.loads(text)
        self.sent.append(message)
        if not self.connected:
            raise libvirt_error("Guest agent is not responding: QEMU guest agent is not connected",
                                libvirt.VIR_ERR_AGENT_UNRESPONSIVE)
        name = message["execute"]
        handler = getattr(self, name.replace("-", "_"))
        try:
            answer = handler(**{k.replace("-", "_"): v for k, v in message.get("arguments", {}).items()})
        except OSError as exc:
            raise command_failed(name, f"{name} failed: {exc.strerror}") from exc
        return json.dumps({"return": answer})

    # --- guest-file-* ------------------------------------------------------------------------
    def guest_file_open(self, path: str, mode: str = "r") -> int:
        if path in self.denied:
            raise command_failed("guest-file-open", f"failed to open file '{path}' (mode: '{mode}'): "
                                 "Permission denied")
        flags = OPEN_FLAGS[mode.replace("b", "")]
        try:
            created = bool(flags & os.O_CREAT) and not os.path.exists(path)
            fd = os.open(path, flags, 0o600)
            if created:
                os.fchmod(fd, 0o666)  # what qemu-ga 7.2 does to a file it creates, umask or not
        except OSError as exc:
            raise command_failed("guest-file-open", f"failed to open file '{path}' (mode: '{mode}'): "
                                 f"{exc.strerror}") from exc
        parent = os.path.dirname(path)
        if os.path.basename(parent).startswith(".tt-upload-"):
            self.stage_modes.append(os.stat(parent).st_mode & 0o777)
        self._next_handle += 1
        self.files[self._next_handle] = fd
        return self._next_handle

    def guest_file_read(self, handle: int, count: int = 4096) -> dict:
        fd = self.files[handle]
        data = bytearray()
        try:
            while len(data) < count:  # as fread() does
                piece = os.read(fd, count - len(data))
                if not piece:
                    break
                data += piece
        except OSError as exc:
            raise command_failed("guest-file-read", f"failed to read file: {exc.strerror}") from exc
        encoded = base64.b64encode(bytes(data)).decode()
        return {"count": len(data), "buf-b64": encoded, "eof": len(data) < count}

    def guest_file_write(self, handle: int, buf_b64: str, count: int | None = None) -> dict:
        data = base64.b64decode(buf_b64)
        return {"count": os.write(self.files[handle], data), "eof": False}

    def guest_file_seek(self, handle: int, offset: int, whence) -> dict:
        return {"position": os.lseek(self.files[handle], offset, WHENCE[whence]), "eof": False}

    def guest_file_close(self, handle: int) -> dict:
        os.close(self.files.pop(handle))
        return {}

    # --- guest-exec --------------------------------------------------------------------------
    def guest_exec(self, path: str, arg: list[str] = (), env: list[str] | None = None,
                   input_data: str | None = None, capture_output: bool = False) -> dict:
        pipe_or_null = subprocess.PIPE if capture_output else subprocess.DEVNULL
        popen = subprocess.Popen(
            [path, *arg], stdin=subprocess.PIPE if input_data is not None else subprocess.DEVNULL,
            stdout=pipe_or_null, stderr=pipe_or_null,
            env=None if env is None else dict(e.split("=", 1) for e in env),
        )
        process = Process(popen)
        if input_data is not None:
            data = base64.b64decode(input_data)
            threading.Thread(target=self._feed, args=(popen.stdin, data), daemon=True).start()
        if capture_output:
            for stream, buffer in ((popen.stdout, process.out), (popen.stderr, process.err)):
                reader = threading.Thread(target=lambda s=stream, b=buffer: b.extend(s.read()), daemon=True)
                reader.start()
                process.readers.append(reader)
        self.processes[popen.pid] = process
        return {"pid": popen.pid}

    @staticmethod
    def _feed(pipe, data: bytes) -> None:
        try:
            pipe.write(data)
            pipe.close()
        except BrokenPipeError:
            pass

    def guest_exec_status(self, pid: int) -> dict:
        process = self.processes[pid]
        code = process.popen.poll()
        # qemu-ga says exited once the process is reaped and its captured pipes are closed.
        if code is None or any(reader.is_alive() for reader in process.readers):
            return {"exited": False}
        del self.processes[pid]
        answer = {"exited": True}
        if code >= 0:
            answer["exitcode"] = code
        else:
            answer["signal"] = -code
        if process.readers:
            answer["out-data"] = base64.b64encode(bytes(process.out)).decode()
            answer["err-data"] = base64.b64encode(bytes(process.err)).decode()
        return answer
