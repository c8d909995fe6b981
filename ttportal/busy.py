"""A busy database is a 503 with Retry-After, never a 500.

Requests keep their write transactions short (no engine I/O, no per-item loops inside
them), so another request's lock is normally gone in milliseconds. When one is not
gone in time anyway, the database says so with an OperationalError: SQLite's "database
is locked" once its busy timeout has passed, PostgreSQL's lock_not_available (a
lock_timeout), serialization_failure or deadlock_detected (the transaction chosen as
the victim). The transaction has rolled back, nothing was changed, and the same request
can be sent again: that is a 503 with a Retry-After and the stable code
`database_busy`, in the API (ttportal.api.exception_handler) and everywhere else
(`BusyDatabase`, a middleware: the portal's pages, its forms and the admin).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import OperationalError
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string

from ttportal.errors import DatabaseBusy

log = logging.getLogger(__name__)

# PostgreSQL's SQLSTATEs for "another transaction was in the way; try again".
BUSY_SQLSTATES = {
    "55P03": "lock_not_available",
    "40001": "serialization_failure",
    "40P01": "deadlock_detected",
}
# What SQLite says when its busy timeout passes with the lock still held.
SQLITE_BUSY = ("database is locked", "database table is locked")


def busy(exc: BaseException) -> DatabaseBusy | None:
    """The DatabaseBusy `exc` stands for, or None when it is something else."""
    if not isinstance(exc, OperationalError):
        return None
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    if sqlstate in BUSY_SQLSTATES or str(exc).startswith(SQLITE_BUSY):
        log.warning("a request found the database busy: %s", exc)
        return DatabaseBusy(settings.TT_DATABASE_BUSY_RETRY_AFTER)
    return None


def retry_headers(error: DatabaseBusy) -> dict[str, str]:
    return {"Retry-After": str(error.retry_after)}


class BusyDatabase:
    """Middleware: a busy database met anywhere outside the API's views is a 503 with
    Retry-After: JSON under /api/, a page elsewhere."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exc):
        error = busy(exc)
        if error is None:
            return None
        if request.path_info.startswith("/api/"):
            return JsonResponse(error.as_dict(), status=503, headers=retry_headers(error))
        page = render_to_string("503.html", {"message": error.message, "retry_after": error.retry_after},
                                request=request)
        return HttpResponse(page, status=503, headers=retry_headers(error))
