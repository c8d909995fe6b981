"""Which exceptions are refusals of a request, and what each refusal says: the one
mapping the REST API, the portal and the admin all use.

Services refuse with a TTError. A database IntegrityError is a refusal too: an
invariant the database holds (a unique name, MAC, port…) caught a race the
services' own checks could not see, two requests at once. The service raised
it inside its atomic block, which has already rolled back, so nothing was
written and the same request may simply be retried. A database too busy to
answer in time is no refusal but a 503 with Retry-After (ttportal/busy.py: the API's
handler and a middleware answer it). Anything else is a bug and stays a 500.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError

from ttportal.errors import IllegalState, TTError

log = logging.getLogger(__name__)

CONCURRENT_CHANGE = "conflicts with a concurrent change; retry the request"


def refusal(exc: Exception) -> TTError | None:
    """The refusal `exc` stands for (a TTError, shown to the user as it is), or None
    when it is not a refusal and should propagate."""
    if isinstance(exc, TTError):
        return exc
    if isinstance(exc, IntegrityError):
        # Logged: frequent ones mean a check the services should make first.
        log.warning("a request hit a database constraint: %s", exc)
        return IllegalState(CONCURRENT_CHANGE)
    return None


def refused(exc: Exception) -> TTError:
    """The refusal `exc` stands for; anything else is raised again (a bug: a 500)."""
    error = refusal(exc)
    if error is None:
        raise exc
    return error
