"""The live console of a running VM: who may open it, the one engine stream a VM's console
shares among its viewers (its hub), one writer at a time, the idle timeout, the records.

The websocket side is vms/consumers.py; this module knows nothing of websockets.

- **Opening** (`open_session`, sync): vms.guest_target's one check (owner, or staff with
  `vm_console`; Env live; VM running; the engine has Feature.CONSOLE), the rate of consoles
  opened (TT_RATE_CONSOLE), and the record `vm_console_open` in the VM's history. Closing
  records `vm_console_close` with how long it stayed open. Never what was typed or shown.
- **The hub** (`Hub`): libvirt allows one console stream per domain, and a tty is better
  shared than multiplied, so each VM's console has one hub, in the web process of the
  viewer who opened it first. It holds the engine's stream (a reader thread, a writer
  thread), keeps the last output (a new viewer sees the screen's recent past) and talks to
  the viewers over Channels' layer: output to the VM's group, roles and refusals to one
  viewer. One viewer writes (the first to open, or whoever sends "take"); the others watch
  and their keystrokes are refused. Nobody typing for TT_CONSOLE_IDLE_TIMEOUT closes it.
- **Several web processes**: with TT_REDIS_URL the layer is Redis, and the hub's channel is
  registered in the `limits` cache (Redis too): a viewer served by another process joins
  the same hub. Without Redis each process's layer is its memory, and a VM's console can be
  served by one process at a time (libvirt refuses a second stream): fine for `./tt.sh run`,
  the one process. A hub whose process died leaves its registration for up to 3 beats.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import threading
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.core.cache import caches

from audit import details
from audit.recording import audited
from engines.guest_io import ConsoleClosed, ConsoleStream
from engines.specs import Feature
from operations.models import Operation
from operations.recording import record
from ttportal import ratelimit
from ttportal.errors import EngineError, NotFound
from vms import policy
from vms.guest_target import GuestTarget, guest_target, mark_active
from vms.kinds import VmKind
from vms.models import Vm

log = logging.getLogger(__name__)

# How the console was reached: the portal's page (a session) or the API (a token).
VIA_PORTAL, VIA_API = "portal", "api"
# The hub tells its viewers it lives this often (seconds); a viewer that hears nothing from it
# for LOST_AFTER beats, or no welcome within JOIN_TIMEOUT, closes with "console lost".
BEAT = 10.0
LOST_AFTER = 3
JOIN_TIMEOUT = 10.0
# What a new viewer is shown of the console's recent past (bytes).
HISTORY = 64 * 1024
# Seeded, for a QEMU guest on this host, from the end of its serial log: the last prompt.
LOG_SEED = 2048
# How long the reader thread waits on the stream before looking whether it should stop.
READ_WAIT = 0.25
# At most this much typed input in one message (bytes): a paste, not a file transfer.
INPUT_MAX = 64 * 1024


def group_name(vm_id: int) -> str:
    """The Channels group of the VM's console viewers."""
    return f"console.vm.{vm_id}"


# --- opening and closing (sync: the database) ---------------------------------------------


@audited("vm.console", on=details.console_target, detail=lambda kwargs, result: {"via": kwargs.get("via")},
         atomic=False)
def open_session(vm_id: int, user, via: str) -> GuestTarget:
    """Check that `user` may open the console of VM `vm_id` now (watch it: vm_console_view;
    `access` tells whether they may type), count it against their rate and record it in
    the VM's history: the VM, its spec and engine."""
    vm = Vm.objects.select_related("env", "node", "template").filter(pk=vm_id).first()
    if vm is None:
        raise NotFound(f"no VM {vm_id}")
    target = guest_target(vm, Feature.CONSOLE, by=user, action="vm_console_view")
    ratelimit.take("console", user=user)
    record(VmKind.VM_CONSOLE_OPEN, env=vm.env, vm=vm, by=user, run=False,
           status=Operation.Status.SUCCEEDED, params={"via": via})
    return target


# What a viewer may do on a console now (`access`).
TYPE, WATCH = "type", "watch"


def access(vm_id: int, user) -> str | None:
    """What `user` may do on VM `vm_id`'s console now: TYPE (vm_console), WATCH
    (vm_console_view: a viewer member) or None (nothing: not theirs any more, or the VM is
    gone). Read anew each call (one query for the VM, one for a member's role): the
    websocket asks it on each input and when told the Env's members changed."""
    vm = Vm.objects.select_related("env").filter(pk=vm_id).first()
    if vm is None or user is None:
        return None
    env = vm.env
    role = None if user.pk == env.owner_id or not user.is_authenticated else env.role_of(user)
    if policy.may_manage(user, env, "vm_console", role=role):
        return TYPE
    if policy.may_manage(user, env, "vm_console_view", role=role):
        return WATCH
    return None


def recheck(vm_ids) -> None:
    """Tell the consoles open on these VMs to check their viewers' rights again (an Env's
    members changed). Sync, after the change is committed; a layer that cannot be reached
    is logged: each console checks again on its next input and every RECHECK_EVERY anyway."""
    from asgiref.sync import async_to_sync

    layer = get_channel_layer()
    if layer is None:
        return
    for vm_id in vm_ids:
        try:
            async_to_sync(layer.group_send)(group_name(vm_id), {"type": "console.recheck"})
        except Exception:
            log.exception("console of VM %s: could not ask it to check its viewers again", vm_id)


def close_session(vm: Vm, user, via: str, seconds: float, reason: str) -> None:
    """Record that `user`'s console of `vm` closed after `seconds`, and why."""
    mark_active(vm.env_id)  # a session open for hours was use until its end
    record(VmKind.VM_CONSOLE_CLOSE, env=vm.env, vm=vm, by=user, run=False,
           status=Operation.Status.SUCCEEDED,
           params={"via": via, "seconds": round(seconds), "reason": reason[:200]})


# --- consoles open per user, in this process ------------------------------------------------

_open_by_user: collections.Counter[int] = collections.Counter()


def claim_slot(user_id: int) -> bool:
    """One more console for `user_id` in this process, unless TT_CONSOLE_MAX_SESSIONS are open."""
    if _open_by_user[user_id] >= settings.TT_CONSOLE_MAX_SESSIONS:
        return False
    _open_by_user[user_id] += 1
    return True


def release_slot(user_id: int) -> None:
    _open_by_user[user_id] -= 1
    if _open_by_user[user_id] <= 0:
        del _open_by_user[user_id]


# --- where a VM's hub is ------------------------------------------------------------------

_local_hubs: dict[int, Hub] = {}
_hub_locks: dict[int, asyncio.Lock] = collections.defaultdict(asyncio.Lock)


def _shared(layer) -> bool:
    """Whether the layer reaches other processes (Redis), so hubs are registered site-wide."""
    return not isinstance(layer, InMemoryChannelLayer)


def _key(vm_id: int) -> str:
    return f"tt-console-hub:{vm_id}"


async def _registered(layer, vm_id: int) -> str | None:
    hub = _local_hubs.get(vm_id)
    if hub is not None and not hub.stopped:
        return hub.channel
    if _shared(layer):
        return await sync_to_async(caches[ratelimit.CACHE_ALIAS].get, thread_sensitive=False)(_key(vm_id))
    return None


async def hub_for(vm_id: int, target: GuestTarget) -> str:
    """The channel of the VM's hub: the one running (here, or in another web process when the
    layer is shared), or a new one started here. Raises EngineError if the engine cannot
    open the console."""
    layer = get_channel_layer()
    async with _hub_locks[vm_id]:
        channel = await _registered(layer, vm_id)
        if channel:
            return channel
        hub = Hub(vm_id, target, layer)
        await hub.start()
        if _shared(layer):
            added = await sync_to_async(caches[ratelimit.CACHE_ALIAS].add, thread_sensitive=False)(
                _key(vm_id), hub.channel, timeout=BEAT * LOST_AFTER)
            if not added:  # another process started one meanwhile: use it, drop ours
                await hub.stop("another web process holds this console")
                channel = await _registered(layer, vm_id)
                if channel:
                    return channel
                raise EngineError("the console is being opened by another web process: retry")
        _local_hubs[vm_id] = hub
        return hub.channel


@dataclass
class Viewer:
    name: str  # the user's name, as the others see it
    since: float
    may_type: bool = True  # False: watches only (a viewer member of the Env)


class Hub:
    """One VM's console stream and its viewers, in this process (see the module's doc)."""

    def __init__(self, vm_id: int, target: GuestTarget, layer):
        self.vm_id = vm_id
        self.target = target
        self.layer = layer
        self.group = group_name(vm_id)
        self.channel = ""
        self.stream: ConsoleStream | None = None
        self.viewers: dict[str, Viewer] = {}
        self.writer: str | None = None
        self.history = bytearray()
        self.last_input = time.monotonic()
        self.stopped = False
        self._io = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"console-{vm_id}")
        self._output: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._stop_reading = threading.Event()

    async def _in_io(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def start(self) -> None:
        # The layer's own kind of name: channels-redis reads every channel of a process from
        # one Redis list per prefix, and waits on one at a time.
        self.channel = await self.layer.new_channel()
        try:
            self.stream = await self._in_io(self.target.engine.open_console, self.target.spec)
        except EngineError:
            self._io.shutdown(wait=False)
            raise
        self.history += await self._in_io(self._log_seed)
        loop = asyncio.get_running_loop()
        reader = threading.Thread(target=self._read, args=(loop,), name=f"console-{self.vm_id}", daemon=True)
        reader.start()
        self._tasks = [asyncio.create_task(coro) for coro in (self._receive(), self._pump(), self._beat())]
        log.info("console of VM %s opened (hub %s)", self.vm_id, self.channel)

    def _log_seed(self) -> bytes:
        """The end of the guest's serial log when the engine has it here (QEMU): the last
        lines, the prompt among them, as the terminal would have shown them."""
        reader = getattr(self.target.engine, "console_log", None)
        try:
            text = reader(self.target.spec.name, LOG_SEED) if reader else None
        except Exception:  # a nicety: never fail a console over it
            return b""
        if not text:
            return b""
        return text.rstrip("\n").replace("\n", "\r\n").encode() + b"\r\n"

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        """The reader thread: the stream's output, handed to the event loop."""
        while not self._stop_reading.is_set():
            try:
                data = self.stream.read(READ_WAIT)
            except ConsoleClosed:
                data = None
            except Exception:
                log.exception("console of VM %s: reading failed", self.vm_id)
                data = None
            if data is None:
                if not self._stop_reading.is_set():
                    loop.call_soon_threadsafe(self._output.put_nowait, None)
                return
            if data:
                loop.call_soon_threadsafe(self._output.put_nowait, data)

    async def _pump(self) -> None:
        while True:
            data = await self._output.get()
            if data is None:
                await self.stop("the console ended (the VM stopped?)")
                return
            self.history += data
            del self.history[:-HISTORY]
            await self.layer.group_send(self.group, {"type": "console.output", "data": data})

    async def _beat(self) -> None:
        idle = settings.TT_CONSOLE_IDLE_TIMEOUT
        every = min(BEAT, max(idle / 4, 0.05))
        last_beat = 0.0
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            if now - self.last_input > idle:
                await self.stop(f"closed: nobody typed for {idle:g} s (TT_CONSOLE_IDLE_TIMEOUT)")
                return
            if now - last_beat >= BEAT:
                last_beat = now
                await self.layer.group_send(self.group, {"type": "console.beat"})
                if _shared(self.layer):
                    await sync_to_async(caches[ratelimit.CACHE_ALIAS].set, thread_sensitive=False)(
                        _key(self.vm_id), self.channel, timeout=BEAT * LOST_AFTER)

    async def _receive(self) -> None:
        while not self.stopped:
            message = await self.layer.receive(self.channel)
            try:
                await self._handle(message)
            except Exception:
                log.exception("console of VM %s: message %s failed", self.vm_id, message.get("type"))

    async def _handle(self, message: dict) -> None:
        kind, session = message.get("type"), message.get("session", "")
        if kind == "hub.join":
            may_type = message.get("may_type", True)
            self.viewers[session] = Viewer(name=message.get("user", "?"), since=time.monotonic(),
                                           may_type=may_type)
            if self.writer is None and may_type:
                self.writer = session
            await self.layer.send(session, {"type": "console.welcome", "history": bytes(self.history)})
            await self._tell_roles()
        elif kind == "hub.leave":
            self.viewers.pop(session, None)
            if self.writer == session:
                self.writer = None
            if not self.viewers:
                await self.stop("no one is watching")
            else:
                await self._tell_roles()
        elif kind == "hub.take" and session in self.viewers and self.viewers[session].may_type:
            self.writer = session
            await self._tell_roles()
        elif kind == "hub.watch_only" and session in self.viewers:  # its rights shrank
            self.viewers[session].may_type = False
            if self.writer == session:
                self.writer = None
            await self._tell_roles()
        elif kind == "hub.input":
            if session != self.writer:
                await self.layer.send(session, {"type": "console.refused", "message": self._refusal()})
                return
            self.last_input = time.monotonic()
            try:
                await self._in_io(self.stream.write, message["data"])
            except ConsoleClosed as exc:
                await self.stop(f"the console ended: {exc}")
        elif kind == "hub.resize" and session == self.writer:
            resize = getattr(self.stream, "resize", None)  # a container's tty has a size; a serial port none
            if resize:
                await self._in_io(resize, int(message["cols"]), int(message["rows"]))

    def _refusal(self) -> str:
        if self.writer is None:
            return "you are watching: take control to type"
        return f"you are watching: {self.viewers[self.writer].name} is typing (take control to type)"

    async def _tell_roles(self) -> None:
        writer = self.viewers.get(self.writer) if self.writer else None
        await self.layer.group_send(self.group, {
            "type": "console.roles", "writer": self.writer or "",
            "writer_name": writer.name if writer else "", "viewers": len(self.viewers),
        })

    async def stop(self, reason: str) -> None:
        """End the console for every viewer and let go of the engine's stream (the VM runs on)."""
        if self.stopped:
            return
        self.stopped = True
        self._stop_reading.set()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        with contextlib.suppress(Exception):
            await self.layer.group_send(self.group, {"type": "console.ended", "message": reason})
        if self.stream is not None:
            with contextlib.suppress(Exception):
                await self._in_io(self.stream.close)
        self._io.shutdown(wait=False)
        if _local_hubs.get(self.vm_id) is self:
            del _local_hubs[self.vm_id]
        if _shared(self.layer):
            cache = caches[ratelimit.CACHE_ALIAS]

            def unregister() -> None:
                if cache.get(_key(self.vm_id)) == self.channel:
                    cache.delete(_key(self.vm_id))

            with contextlib.suppress(Exception):
                await sync_to_async(unregister, thread_sensitive=False)()
        log.info("console of VM %s closed: %s", self.vm_id, reason)
