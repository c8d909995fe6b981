"""How often one user may do a cheap action that still costs the site something (an
extend, a peering, a token, a test notification): the one limiter every service calls,
so the portal, the API, the admin and the notification links are bounded alike.

Counting is DRF's own throttle (rest_framework.throttling.SimpleRateThrottle: a sliding
window of timestamps per key), kept in the `limits` cache (settings.CACHES): Redis when
TT_REDIS_URL is set, else the database's cache table. Not the per-process local memory
cache: behind several web processes each would count on its own, multiplying the limit.
With the database cache the count is written in the service's own transaction, so a
request refused for any other reason (rolled back) is not counted either.

Actions asked by no one (tasks, sweeps: `by=None`) and by staff (the operators, who act
for many users at once in the admin) are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.db import DatabaseCache
from rest_framework.throttling import SimpleRateThrottle

from ttportal.errors import RateLimited

CACHE_ALIAS = "limits"

PERIOD_WORDS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


@dataclass(frozen=True)
class Rate:
    name: str  # as the refusal names it (limit_name)
    label: str  # what is counted, as people read it
    setting: str  # its rate's setting (and environment variable)


RATES: dict[str, Rate] = {rate.name: rate for rate in (
    Rate("extend", "Env extensions", "TT_RATE_EXTEND"),
    Rate("peer", "peering requests (peer and unpeer)", "TT_RATE_PEER"),
    Rate("token_create", "new API tokens", "TT_RATE_TOKEN_CREATE"),
    Rate("test_notification", "test notifications on one channel", "TT_RATE_TEST_NOTIFICATION"),
    Rate("exec", "commands run in guests", "TT_RATE_EXEC"),
    Rate("files", "file copies and listings in guests", "TT_RATE_FILES"),
    Rate("console", "consoles opened", "TT_RATE_CONSOLE"),
)}


class _Throttle(SimpleRateThrottle):
    """DRF's throttle counting one key of ours instead of a request's."""

    cache_format = "tt-rate:%(scope)s:%(ident)s"

    def __init__(self, scope: str, ident: str, rate: str):
        self.scope, self.ident, self.rate = scope, ident, rate
        self.cache = caches[CACHE_ALIAS]
        super().__init__()

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.ident}


def counted(user) -> bool:
    return user is not None and not getattr(user, "is_staff", False)


def take(name: str, *, user, key: str = "") -> None:
    """Count one `name` action of `user` (on `key`, e.g. a channel, when the limit is per
    something of theirs), or refuse it with RateLimited when the rate is used up."""
    rate = getattr(settings, RATES[name].setting)
    if rate is None or not counted(user):
        return
    throttle = _Throttle(name, f"{user.pk}:{key}" if key else str(user.pk), rate)
    if throttle.allow_request(None, None):
        return
    label = RATES[name].label
    period = PERIOD_WORDS[throttle.duration]
    wait = math.ceil(throttle.wait() or throttle.duration)
    raise RateLimited(
        f"rate limited: at most {throttle.num_requests} {label} per {period}"
        f"{f' ({key})' if key else ''}; retry in {wait} s",
        limit_name=name, limit=throttle.num_requests, period=throttle.duration, retry_after=wait,
    )


def claim_slot(name: str, *, user, most: int, seconds: int, what: str) -> str:
    """One of `most` slots of `user` for an action that runs a while (a command in a guest):
    the slot's key, to give back with `release_slot`; "" when nothing is counted (no
    limit, staff, tasks). Refused with RateLimited when every slot is held. A slot not
    given back (its web process died) frees itself after `seconds`. `cache.add` is atomic
    on Redis and on the database's cache table alike, so web processes share the slots."""
    if not most or not counted(user):
        return ""
    cache = caches[CACHE_ALIAS]
    for i in range(most):
        key = f"tt-slot:{name}:{user.pk}:{i}"
        if cache.add(key, 1, timeout=seconds):
            return key
    raise RateLimited(f"you have {most} {what} running, the most one may have at once; retry when one has "
                      f"ended", limit_name=name, limit=most, retry_after=5)


def release_slot(key: str) -> None:
    if key:
        caches[CACHE_ALIAS].delete(key)


def counts_in_database() -> bool:
    """Whether the counts are rows of the database (rolled back with a transaction)."""
    return isinstance(caches[CACHE_ALIAS], DatabaseCache)


def clear() -> None:
    """Forget every count (tests)."""
    caches[CACHE_ALIAS].clear()
