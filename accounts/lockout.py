"""Failed logins, limited per account and per client address (django-axes).

Every password check goes through django.contrib.auth.authenticate(request=...): the
portal's sign-in form, the admin's, and POST /api/tokens/ with Basic auth
(`PasswordAuthentication`). Axes's backend, first in
AUTHENTICATION_BACKENDS, refuses a locked-out account or address before the password
is checked; its signal handler records each failure as an AccessAttempt row (shown,
and deleted to lift a lockout, in the admin).

What axes leaves to us (settings AXES_*):
- the client address, from ttportal.proxy (X-Forwarded-For only from a trusted proxy);
- a limit per address of its own (TT_LOGIN_ADDRESS_FAILURE_LIMIT, higher than the
  account's: many people may sign in from behind one NAT): `LoginFailures`;
- the answer, which says when to retry: a page, or for the API a JSON 429, both with
  Retry-After: `locked_out_response`, `refusal`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from axes.handlers.database import AxesDatabaseHandler
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_username, get_cool_off, get_lockout_parameters
from django.conf import settings
from django.db.models import Max, Sum
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from rest_framework.authentication import BasicAuthentication
from rest_framework.exceptions import AuthenticationFailed

from accounts.oidc import password_login_allowed, password_off_message
from ttportal.api import Refused, is_api
from ttportal.errors import RateLimited
from ttportal.proxy import client_address


def client_ip(request) -> str | None:
    """AXES_CLIENT_IP_CALLABLE: who is asking, as the trusted proxies tell it."""
    address = client_address(request)
    return str(address) if address is not None else None


@dataclass(frozen=True)
class Criterion:
    parameter: str  # username or ip_address (AXES_LOCKOUT_PARAMETERS)
    failures: int  # within the last TT_LOGIN_LOCKOUT seconds
    last_failure: datetime | None

    @property
    def limit(self) -> int:
        return (settings.TT_LOGIN_ADDRESS_FAILURE_LIMIT if self.parameter == "ip_address"
                else settings.TT_LOGIN_FAILURE_LIMIT)

    @property
    def locked(self) -> bool:
        return self.failures >= self.limit


class LoginFailures(AxesDatabaseHandler):
    """Axes's database handler, with a limit per criterion: the account's
    (AXES_FAILURE_LIMIT = TT_LOGIN_FAILURE_LIMIT) and the address's."""

    def criteria(self, request, credentials=None) -> list[Criterion]:
        parameters = get_lockout_parameters(request, credentials)
        found = []
        for parameter, attempts in zip(parameters, self.get_user_attempts(request, credentials), strict=True):
            totals = attempts.aggregate(failures=Sum("failures_since_start"), last=Max("attempt_time"))
            found.append(Criterion(str(parameter), totals["failures"] or 0, totals["last"]))
        return found

    def get_failures(self, request, credentials=None) -> int:
        """The failures that count against AXES_FAILURE_LIMIT: the account's own, or the
        limit itself once any criterion has reached its own limit."""
        criteria = self.criteria(request, credentials)
        own = next((c.failures for c in criteria if c.parameter == "username"), 0)
        if any(c.locked for c in criteria):
            return max(own, settings.AXES_FAILURE_LIMIT)
        return own


def refusal(request, credentials=None) -> RateLimited:
    """Why this request's login is refused, and for how long: until the last failure of
    the locked criterion is TT_LOGIN_LOCKOUT old (no try counts meanwhile:
    AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT is off)."""
    handler = LoginFailures()
    AxesProxyHandler.update_request(request)  # the address and time axes counts by
    criteria = [c for c in handler.criteria(request, credentials) if c.locked]
    now = timezone.now()
    cool_off = get_cool_off(request)
    ends = [c.last_failure + cool_off for c in criteria if c.last_failure is not None]
    # Axes counts a failure until it is more than the cool-off old: one second past its end.
    retry_after = max(1, math.floor(((max(ends) if ends else now + cool_off) - now).total_seconds()) + 1)
    by_address = bool(criteria) and all(c.parameter == "ip_address" for c in criteria)
    limit = settings.TT_LOGIN_ADDRESS_FAILURE_LIMIT if by_address else settings.TT_LOGIN_FAILURE_LIMIT
    who = "from this address" if by_address else "for this account"
    return RateLimited(
        f"too many failed logins {who} (at most {limit} in {settings.TT_LOGIN_LOCKOUT} s): "
        f"refused, the right password too, for {retry_after} s more; an operator can lift it sooner",
        limit_name="login_failures_per_address" if by_address else "login_failures_per_account",
        limit=limit, period=settings.TT_LOGIN_LOCKOUT, retry_after=retry_after,
    )


def locked_out_response(request, original_response=None, credentials=None) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the answer to a login refused for too many failures."""
    error = refusal(request, credentials)
    if is_api(request):
        response = JsonResponse(error.as_dict(), status=429)
    else:
        response = render(request, "registration/locked_out.html", {
            "error": error,
            "username": get_client_username(request, credentials) or "",
            "retry_at": timezone.now() + timedelta(seconds=error.retry_after),
            "minutes": math.ceil(error.retry_after / 60),
        }, status=429)
    response["Retry-After"] = str(error.retry_after)
    return response


class PasswordAuthentication(BasicAuthentication):
    """HTTP Basic auth (only to create a token) through authenticate(request=...), as DRF's
    is, so its failures count and a locked-out account or address is refused, the right
    password too. That refusal is a 429 naming the limit, with Retry-After, rather than a
    401 inviting another try. Under TT_OIDC_ONLY the 401 says passwords are off (but for
    the break-glass accounts): a token is made on the portal's API tokens page."""

    def authenticate_credentials(self, userid, password, request=None):
        try:
            return super().authenticate_credentials(userid, password, request)
        except AuthenticationFailed:
            if request is not None and getattr(request, "axes_locked_out", False):
                credentials = getattr(request, "axes_credentials", None) or {"username": userid}
                raise Refused(refusal(request, credentials)) from None
            if not password_login_allowed(userid):
                raise AuthenticationFailed(f"{password_off_message()} Create a token on the portal's "
                                           "API tokens page.") from None
            raise
