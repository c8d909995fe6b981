"""The console's websocket: `/ws/vms/<id>/console/` for the portal (its session) and
`/api/vms/<id>/console/` for API clients (`Authorization: Token ...`). vms/console.py does
the checks, the records and the sharing; this is the wire.

Before the handshake is accepted, a request with no user (no session, a bad token) and a
session's request from another origin are refused: the client sees HTTP 403. After it, a
refusal (not allowed on this VM, VM not running, engine without a console, rate limited)
is a JSON message {"type": "error", "code", "message"} and a close with code 4000 + the
HTTP status the API would answer (4403, 4404, 4409, 4422, 4429, 4502).

The wire, once open:
- server to client: binary frames are the console's output (bytes for the terminal, the
  recent past first); text frames are JSON: {"type": "status", "role": "writer" |
  "watcher", "writer": name, "viewers": n}, {"type": "refused", "message"} (a watcher's
  keystrokes), {"type": "ended", "message"} (then the close, 1000), {"type": "error", ...}.
- client to server: binary frames, or {"type": "input", "data": "text"}, are keystrokes;
  {"type": "take"} takes control; {"type": "resize", "cols", "rows"} sizes a container's tty.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from audit import context as audit_context
from ttportal.api import status_for
from ttportal.errors import RateLimited, TTError
from vms import console

log = logging.getLogger(__name__)

# How often a viewer looks at its hub's beats.
WATCH_EVERY = 1.0
# How often an open console checks its viewer's rights again, besides on each input and when
# told the Env's members changed (vms.console.recheck): a user taken out of a group the Env
# is shared with (in the admin) loses it within this time.
RECHECK_EVERY = 5.0
WATCH_ONLY = "your role on this Env lets you watch its consoles, not type in them"


def same_origin(scope) -> bool:
    """Whether a browser's websocket comes from the site's own pages: its Origin names the
    host it was sent to (or one of TT_CSRF_TRUSTED_ORIGINS). No Origin: not a browser page's."""
    headers = dict(scope.get("headers") or [])
    origin = headers.get(b"origin", b"").decode("latin-1").strip()
    host = headers.get(b"host", b"").decode("latin-1").strip().lower()
    if not origin or origin == "null":
        return False
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host


class ConsoleConsumer(AsyncWebsocketConsumer):
    target = None
    hub = ""
    slot = False
    opened = 0.0
    role = "watcher"
    reason = "closed by the viewer"
    may_type = True

    async def connect(self):
        self.user = self.scope.get("user")
        self.via = console.VIA_API if self.scope.get("auth_via") == "token" else console.VIA_PORTAL
        if self.user is None or not self.user.is_authenticated:
            await self.close()  # before accepting: the handshake's 403
            return
        if self.via == console.VIA_PORTAL and not same_origin(self.scope):
            await self.close()
            return
        await self.accept()
        self.vm_id = int(self.scope["url_route"]["kwargs"]["vm_id"])
        self.heard = time.monotonic()
        self.welcomed = False
        if not console.claim_slot(self.user.pk):
            await self.refuse(RateLimited(
                f"you have {settings.TT_CONSOLE_MAX_SESSIONS} consoles open, the most one may have "
                f"at once (TT_CONSOLE_MAX_SESSIONS): close one first", limit_name="console_sessions",
                limit=settings.TT_CONSOLE_MAX_SESSIONS, retry_after=10))
            return
        self.slot = True
        try:
            with audit_context.using(audit_context.origin_of_scope(self.scope, self.via)):
                self.target = await database_sync_to_async(console.open_session)(self.vm_id, self.user,
                                                                                  self.via)
            access = await database_sync_to_async(console.access)(self.vm_id, self.user)
            self.may_type = access == console.TYPE
            self.opened = time.monotonic()
            await self.channel_layer.group_add(console.group_name(self.vm_id), self.channel_name)
            self.hub = await console.hub_for(self.vm_id, self.target)
        except TTError as exc:
            self.reason = f"refused: {exc.message}"
            await self.refuse(exc)
            return
        except Exception:  # a bug: closed like any refusal, so the slot and records stay right
            log.exception("console of VM %s: opening failed", self.vm_id)
            self.reason = "failed: internal error"
            await self.refuse(TTError("internal error opening the console; it has been logged"))
            return
        await self.channel_layer.send(self.hub, {"type": "hub.join", "session": self.channel_name,
                                                 "user": self.user.get_username(), "may_type": self.may_type})
        self.watchdog = asyncio.create_task(self._watch())

    async def refuse(self, exc: TTError) -> None:
        error = {"type": "error", "code": str(exc.code), "message": exc.message}
        await self.send(text_data=json.dumps(error))
        await self.close(code=4000 + status_for(exc))

    async def _watch(self) -> None:
        """Close when the hub falls silent: no welcome in time, or no beat for LOST_AFTER beats;
        check the viewer's rights every RECHECK_EVERY."""
        checked = time.monotonic()
        while True:
            await asyncio.sleep(WATCH_EVERY)
            if time.monotonic() - checked >= RECHECK_EVERY:
                checked = time.monotonic()
                if not await self._recheck():
                    return
            silent = time.monotonic() - self.heard
            lost = silent > (console.BEAT * console.LOST_AFTER if self.welcomed else console.JOIN_TIMEOUT)
            if lost:
                await self._end("the console was lost (its web process stopped?): reopen it")
                return

    async def _end(self, message: str) -> None:
        self.reason = message
        await self.send(text_data=json.dumps({"type": "ended", "message": message}))
        await self.close()

    async def disconnect(self, code):
        watchdog = getattr(self, "watchdog", None)
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()
        if self.hub:
            await self.channel_layer.send(self.hub, {"type": "hub.leave", "session": self.channel_name})
        if self.target is not None:
            await self.channel_layer.group_discard(console.group_name(self.vm_id), self.channel_name)
        if self.target is not None:
            await database_sync_to_async(console.close_session)(
                self.target.vm, self.user, self.via, time.monotonic() - self.opened, self.reason)
        if self.slot:
            self.slot = False
            console.release_slot(self.user.pk)

    # --- from the client ------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        if not self.hub:
            return
        if bytes_data is not None:
            await self._input(bytes_data)
            return
        try:
            message = json.loads(text_data or "")
            kind = message.get("type")
        except (ValueError, AttributeError):
            await self._say_refused('not a console message: bytes, or JSON {"type": "input", "data": ...}')
            return
        if kind == "input" and isinstance(message.get("data"), str):
            await self._input(message["data"].encode())
        elif kind == "take":
            if not await self._recheck():
                return
            if not self.may_type:
                await self._say_refused(WATCH_ONLY)
                return
            await self.channel_layer.send(self.hub, {"type": "hub.take", "session": self.channel_name})
        elif kind == "resize":
            try:
                cols, rows = int(message["cols"]), int(message["rows"])
            except (KeyError, TypeError, ValueError):
                await self._say_refused("resize takes integer cols and rows")
                return
            if 1 <= cols <= 1000 and 1 <= rows <= 1000:
                await self.channel_layer.send(self.hub, {"type": "hub.resize", "session": self.channel_name,
                                                         "cols": cols, "rows": rows})
        else:
            await self._say_refused(f"unknown message type {kind!r}: input, take or resize")

    async def _recheck(self) -> bool:
        """The viewer's rights, read again: closed when they may not watch any more (False),
        watching only when they may not type (a viewer's role)."""
        try:
            now = await database_sync_to_async(console.access)(self.vm_id, self.user)
        except Exception:  # the database is away for a moment: the next check decides
            log.exception("console of VM %s: checking %s's rights failed", self.vm_id, self.user)
            return True
        if now is None:
            await self._end("your access to this VM was removed")
            return False
        if now == console.WATCH and self.may_type:
            self.may_type = False
            if self.hub:
                await self.channel_layer.send(self.hub, {"type": "hub.watch_only",
                                                         "session": self.channel_name})
        elif now == console.TYPE:
            self.may_type = True
        return True

    async def _input(self, data: bytes) -> None:
        if not await self._recheck():
            return
        if not self.may_type:
            await self._say_refused(WATCH_ONLY)
            return
        if self.role != "writer":  # the hub refuses it too: this answers at once
            await self._say_refused("you are watching: take control to type")
            return
        if len(data) > console.INPUT_MAX:
            await self._say_refused(f"at most {console.INPUT_MAX} bytes of input at once")
            return
        await self.channel_layer.send(self.hub, {"type": "hub.input", "session": self.channel_name,
                                                 "data": data})

    async def _say_refused(self, message: str) -> None:
        await self.send(text_data=json.dumps({"type": "refused", "message": message}))

    # --- from the hub ---------------------------------------------------------------------

    async def console_welcome(self, event):
        self.heard = time.monotonic()
        self.welcomed = True
        if event["history"]:
            await self.send(bytes_data=event["history"])

    async def console_output(self, event):
        self.heard = time.monotonic()
        if self.welcomed:  # before the welcome, the history has it (or will)
            await self.send(bytes_data=event["data"])

    async def console_beat(self, event):
        self.heard = time.monotonic()

    async def console_roles(self, event):
        self.heard = time.monotonic()
        self.role = "writer" if event["writer"] == self.channel_name else "watcher"
        await self.send(text_data=json.dumps({
            "type": "status", "role": self.role, "writer": event["writer_name"] or None,
            "viewers": event["viewers"],
        }))

    async def console_recheck(self, event):
        """The Env's members changed (vms.console.recheck): check this viewer's rights now."""
        await self._recheck()

    async def console_refused(self, event):
        await self._say_refused(event["message"])

    async def console_ended(self, event):
        self.hub = ""  # gone: nothing to leave
        await self._end(event["message"])


def upgrade_required(request, vm_id: int):
    """`/api/vms/{id}/console/` asked as plain HTTP: it is a websocket (426, saying so)."""
    from ttportal.api import error_response

    response = error_response(426, "upgrade_required",
                              "the console is a websocket: connect with Upgrade: websocket and "
                              "Authorization: Token ... (docs/guide/console.md)")
    response["Upgrade"] = "websocket"
    return response
