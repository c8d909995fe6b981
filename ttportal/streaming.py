"""A streamed response body that stays streamed whichever server runs the site.

Django's StreamingHttpResponse serves a synchronous iterator under WSGI and an
asynchronous one under ASGI; handed the other kind, it first reads the whole iterator
into a list (with a warning). That would hold a downloaded file in memory and hold a
command's server-sent events back until it ended. `body_for(request, iterable)` gives
each server the kind it streams: the iterable itself under WSGI, and under ASGI an
asynchronous wrapper pulling one item at a time in the request's own thread (where the
sync view ran, so the database connection is the one it used).

Either way the iterable's `close` (a generator's, a GuestFile's) runs once the response
ends, completed or not (the client went away): Django calls it with the response's.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header

_END = object()


class _AsyncBody:
    def __init__(self, iterable: Iterable[bytes]):
        self._items = iter(iterable)
        self._close = getattr(iterable, "close", None) or getattr(self._items, "close", None)
        self._closed = False

    def __aiter__(self):
        return self._pull()

    async def _pull(self):
        pull = sync_to_async(next, thread_sensitive=True)
        try:
            while True:
                item = await pull(self._items, _END)
                if item is _END:
                    return
                yield item
        finally:
            await sync_to_async(self.close, thread_sensitive=True)()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._close is not None:
                self._close()


def body_for(request, iterable: Iterable[bytes]):
    """`iterable` as the server running `request` (a Django or DRF request) streams it."""
    django_request = getattr(request, "_request", request)
    return _AsyncBody(iterable) if isinstance(django_request, ASGIRequest) else iterable


def download_response(request, opened, path: str) -> StreamingHttpResponse:
    """A file read from somewhere (`opened`: an iterable of chunks with a `size`, None when
    unknown) streamed as an attachment named after the last part of `path`: the API's and
    the portal's download alike."""
    response = StreamingHttpResponse(body_for(request, opened), content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(
        as_attachment=True, filename=posixpath.basename(path.rstrip("/")) or "file")
    if opened.size is not None:
        response["Content-Length"] = str(opened.size)
    return response
