"""Single sign-on with OpenID Connect: mozilla-django-oidc's code flow, made stricter
(docs/guide/sso.md).

- The provider's endpoints come from TT_OIDC_* settings, or its discovery document
  (read when first needed, kept an hour per process), never at start-up: a provider that
  is down refuses sign-ins, not the site's start.
- The ID token is checked: its signature (TT_OIDC_SIGN_ALGO, RS256 by default, with the
  provider's JWKS), its issuer (TT_OIDC_ISSUER exactly), its audience (our client id; `azp`
  too when it names several), its expiry; the nonce and the state are mozilla-django-oidc's
  (both on), with PKCE.
- A user is found by the ID token's issuer and subject (`OidcIdentity`), never by email:
  the first sign-in creates a user (a username already taken, by a local account of the
  same email say, gets a suffix: `alice-2`), and nothing is ever taken over.
- The groups claim (TT_OIDC_GROUPS_CLAIM) decides, at every sign-in, which of the groups
  named TT_OIDC_GROUPS_PREFIX + value the user is in; groups without the prefix, and
  is_staff / is_superuser, are never touched: the provider cannot make anyone an operator.
- TT_OIDC_ONLY: `PasswordGate` refuses every password but the break-glass accounts'
  (TT_OIDC_BREAK_GLASS_USERS), for the portal's form, the admin's and the API's Basic auth
  alike, since they all go through django.contrib.auth.authenticate.

Signals: a sign-in is django.contrib.auth.login (`user_logged_in`); a refused one sends
`user_login_failed` once, with credentials {"oidc": <reason>} and the username when one is
known (accounts/views.py: OidcCallback).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings

from accounts.models import OidcIdentity

log = logging.getLogger(__name__)

DISCOVERY_TTL = 3600  # seconds a discovery document is kept
CLOCK_SKEW = 60  # seconds of leeway on exp, iat and nbf


def enabled() -> bool:
    return bool(settings.TT_OIDC_ISSUER and settings.TT_OIDC_CLIENT_ID)


def password_login_allowed(username: str | None) -> bool:
    """Whether this account may sign in with a password: always, unless TT_OIDC_ONLY, when
    only the break-glass accounts may."""
    return not settings.TT_OIDC_ONLY or username in settings.TT_OIDC_BREAK_GLASS_USERS


def password_off_message() -> str:
    return (f"Password sign-in is off on this site: sign in with {settings.TT_OIDC_PROVIDER_NAME}. "
            "Only the break-glass operator accounts may use a password.")


def sso(request) -> dict:
    """Context processor: what the sign-in pages show."""
    return {"sso": {"enabled": enabled(), "name": settings.TT_OIDC_PROVIDER_NAME,
                    "only": settings.TT_OIDC_ONLY}}


# --- The provider's endpoints -------------------------------------------------------------

class ProviderUnavailable(Exception):
    """The provider's discovery document could not be read, or does not fit."""


@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str
    end_session_endpoint: str  # "" when the provider has none (Google)


_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
              "end_session_endpoint")
_discovered: dict[str, tuple[float, dict]] = {}
_discovered_lock = threading.Lock()


def _discover(issuer: str) -> dict:
    with _discovered_lock:
        cached = _discovered.get(issuer)
        if cached and time.monotonic() - cached[0] < DISCOVERY_TTL:
            return cached[1]
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=settings.TT_OIDC_TIMEOUT)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(f"cannot read the provider's discovery document {url}: {exc}") from None
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        found = document.get("issuer") if isinstance(document, dict) else None
        raise ProviderUnavailable(f"the discovery document {url} names the issuer {found!r}, "
                                  f"not TT_OIDC_ISSUER {issuer!r}")
    with _discovered_lock:
        _discovered[issuer] = (time.monotonic(), document)
    return document


def forget_discovery() -> None:
    with _discovered_lock:
        _discovered.clear()


def provider() -> Provider:
    """The endpoints: each TT_OIDC_<ENDPOINT> set wins, the rest come from discovery (not
    read at all when the four needed ones are set)."""
    issuer = settings.TT_OIDC_ISSUER
    given = {name: getattr(settings, f"TT_OIDC_{name.upper()}", "") for name in _ENDPOINTS}
    needed = _ENDPOINTS[:4]
    found = dict(given)
    if not all(given[name] for name in needed):
        document = _discover(issuer)
        for name in _ENDPOINTS:
            found[name] = given[name] or str(document.get(name) or "")
        missing = [name for name in needed if not found[name]]
        if missing:
            raise ProviderUnavailable(f"the provider's discovery document lacks {', '.join(missing)}")
    return Provider(issuer=issuer, **found)


def mozilla_setting(attr: str, *default):
    """mozilla-django-oidc's settings (OIDC_*), from ours: the views and the backend ask
    this instead of django.conf.settings."""
    fixed = {
        "OIDC_RP_CLIENT_ID": settings.TT_OIDC_CLIENT_ID,
        "OIDC_RP_CLIENT_SECRET": settings.TT_OIDC_CLIENT_SECRET,
        "OIDC_RP_SCOPES": settings.TT_OIDC_SCOPES,
        "OIDC_RP_SIGN_ALGO": settings.TT_OIDC_SIGN_ALGO,
        "OIDC_TIMEOUT": settings.TT_OIDC_TIMEOUT,
        "OIDC_VERIFY_SSL": True,
        "OIDC_USE_NONCE": True,
        "OIDC_USE_PKCE": True,
        "OIDC_ALLOW_UNSECURED_JWT": False,
        "OIDC_VERIFY_KID": True,
        "OIDC_STORE_ACCESS_TOKEN": False,
        "OIDC_CREATE_USER": True,
        "OIDC_AUTHENTICATION_CALLBACK_URL": "oidc_authentication_callback",
        "OIDC_REDIRECT_FIELD_NAME": "next",
    }
    if attr in fixed:
        return fixed[attr]
    endpoint = {"OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
                "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
                "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
                "OIDC_OP_JWKS_ENDPOINT": "jwks_uri"}.get(attr)
    if endpoint:
        return getattr(provider(), endpoint)
    return import_from_settings(attr, *default)


def end_session_url(request) -> str:
    """Where to send the browser to end the provider's session too (RP-initiated logout:
    id_token_hint, post_logout_redirect_uri = our sign-in page, client_id), or "" when this
    session did not come from the provider or the provider offers no end-session endpoint."""
    id_token = request.session.get("oidc_id_token")
    if not id_token or not enabled():
        return ""
    try:
        endpoint = provider().end_session_endpoint
    except ProviderUnavailable as exc:
        log.warning("signing out of the portal only: %s", exc)
        return ""
    if not endpoint:
        return ""
    query = urlencode({"id_token_hint": id_token, "client_id": settings.TT_OIDC_CLIENT_ID,
                       "post_logout_redirect_uri": request.build_absolute_uri(reverse("login"))})
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


# --- Authentication -----------------------------------------------------------------------

class OidcRefused(Exception):
    """A sign-in through the provider refused: `reason` is stable (for the audit), the
    message is for the person."""

    def __init__(self, reason: str, message: str, username: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.username = username


class PasswordGate:
    """Before Django's ModelBackend: under TT_OIDC_ONLY, refuses every password but the
    break-glass accounts'. PermissionDenied stops authenticate() (no later backend tries)
    and sends user_login_failed, which django-axes counts like any failure. It authenticates
    nobody itself, and has no get_user: sessions stay ModelBackend's."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is not None and password is not None and not password_login_allowed(username):
            raise PermissionDenied(password_off_message())
        return None


def _claim(claims: dict, name: str):
    """A claim by its name, or a dotted path into nested claims (realm_access.roles)."""
    if name in claims:
        return claims[name]
    value = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def claim_groups(claims: dict) -> set[str]:
    value = _claim(claims, settings.TT_OIDC_GROUPS_CLAIM)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return set()
    return {item for item in value if isinstance(item, str) and item}


def sync_groups(user, claims: dict) -> None:
    """Put the user in exactly the provider-managed groups (TT_OIDC_GROUPS_PREFIX) their
    groups claim names, of those that exist; other groups are the operators' and stay."""
    if not settings.TT_OIDC_GROUPS_CLAIM:
        return
    prefix = settings.TT_OIDC_GROUPS_PREFIX
    wanted = set(Group.objects.filter(name__in={prefix + name for name in claim_groups(claims)}))
    held = set(user.groups.filter(name__startswith=prefix))
    if held - wanted:
        user.groups.remove(*(held - wanted))
    if wanted - held:
        user.groups.add(*(wanted - held))


_NOT_IN_USERNAME = re.compile(r"[^\w.@+-]")


def new_username(claims: dict) -> str:
    """A free username from the username claim (else the email's local part, else "user"),
    with -2, -3… when it is taken: an existing account is never taken over."""
    User = get_user_model()
    base = _claim(claims, settings.TT_OIDC_USERNAME_CLAIM) if settings.TT_OIDC_USERNAME_CLAIM else None
    if not isinstance(base, str) or not base.strip():
        email = claims.get("email")
        base = email.split("@")[0] if isinstance(email, str) else ""
    base = _NOT_IN_USERNAME.sub("", base)[:140] or "user"
    candidate, n = base, 1
    while User.objects.filter(username__iexact=candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _profile(claims: dict) -> dict:
    email = claims.get("email")
    # An address the provider says it has not verified is not kept: notices go to it.
    if not isinstance(email, str) or claims.get("email_verified") is False:
        email = ""
    return {"email": email[:254],
            "first_name": str(claims.get("given_name") or "")[:150],
            "last_name": str(claims.get("family_name") or "")[:150]}


class OidcBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend: answers only the callback (accounts/views.py:
    OidcCallback, which passes oidc=True and the flow's nonce and PKCE verifier on the
    request), checks the ID token fully, and finds the user by issuer and subject."""

    get_settings = staticmethod(mozilla_setting)

    def __init__(self, *args, **kwargs):
        # authenticate() builds every backend for every password sign-in too: nothing here
        # may reach the provider. The endpoints are read in authenticate().
        self.UserModel = get_user_model()

    def authenticate(self, request, oidc=False, **kwargs):
        if not oidc or request is None or not enabled():
            return None
        flow = getattr(request, "oidc_flow", None) or {}
        try:
            endpoints = provider()
        except ProviderUnavailable as exc:
            raise OidcRefused("provider_unavailable", f"{settings.TT_OIDC_PROVIDER_NAME} cannot be reached: "
                              f"{exc}") from None
        self.provider = endpoints
        self.OIDC_OP_TOKEN_ENDPOINT = endpoints.token_endpoint
        self.OIDC_OP_USER_ENDPOINT = endpoints.userinfo_endpoint
        self.OIDC_OP_JWKS_ENDPOINT = endpoints.jwks_uri
        self.OIDC_RP_CLIENT_ID = settings.TT_OIDC_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.TT_OIDC_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.TT_OIDC_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None
        try:
            return super().authenticate(request, nonce=flow.get("nonce"),
                                        code_verifier=flow.get("code_verifier"))
        except (SuspiciousOperation, jwt.PyJWTError, KeyError) as exc:  # KeyError: a key without kid
            raise OidcRefused("token_invalid", f"the provider's ID token was refused: {exc}") from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise OidcRefused("provider_error", f"{settings.TT_OIDC_PROVIDER_NAME} refused the sign-in "
                              f"(HTTP {status}); start again") from None
        except (requests.RequestException, ValueError) as exc:
            raise OidcRefused("provider_unavailable", f"{settings.TT_OIDC_PROVIDER_NAME} cannot be reached: "
                              f"{type(exc).__name__}") from None

    def store_tokens(self, access_token, id_token):
        """Keeps the ID token (the logout's id_token_hint) for the view to put in the session
        once the user is signed in: a refused sign-in leaves nothing in it."""
        self.request.oidc_id_token = id_token

    def get_user(self, user_id):
        """The session's user, as ModelBackend's: a user disabled since is signed out
        (mozilla-django-oidc's would keep them)."""
        user = super().get_user(user_id)
        return user if user is not None and self.user_can_authenticate(user) else None

    def _verify_jws(self, payload, key):
        """The signature (only TT_OIDC_SIGN_ALGO, never "none" or HS*), and what
        mozilla-django-oidc leaves out: the issuer, the audience (azp when it names several)
        and the times, each required."""
        try:
            header = jwt.get_unverified_header(payload)
        except jwt.InvalidTokenError as exc:
            raise SuspiciousOperation(f"malformed token: {exc}") from None
        if header.get("alg") != self.OIDC_RP_SIGN_ALGO:
            raise SuspiciousOperation(f"signed with {header.get('alg')!r}, not {self.OIDC_RP_SIGN_ALGO}")
        client_id = self.OIDC_RP_CLIENT_ID
        try:
            claims = jwt.decode(payload, key, algorithms=[self.OIDC_RP_SIGN_ALGO], audience=client_id,
                                issuer=self.provider.issuer, leeway=CLOCK_SKEW,
                                options={"require": ["iss", "aud", "sub", "exp", "iat"]})
        except jwt.InvalidTokenError as exc:
            raise SuspiciousOperation(f"{type(exc).__name__}: {exc}") from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != client_id:
            raise SuspiciousOperation(f"the token is for several audiences and its azp is not {client_id}")
        return claims

    def get_or_create_user(self, access_token, id_token, payload):
        userinfo = self.get_userinfo(access_token, id_token, payload)
        if not isinstance(userinfo, dict) or userinfo.get("sub") != payload["sub"]:
            raise OidcRefused("userinfo_mismatch",
                              "the provider's user info is not about the ID token's user")
        # The signed ID token's claims win over the user info's (Entra sends groups only there).
        claims = {**userinfo, **payload}
        domains = settings.TT_OIDC_HOSTED_DOMAINS
        if domains and payload.get("hd") not in domains:
            raise OidcRefused("domain", f"only accounts of {', '.join(domains)} may sign in here",
                              username=claims.get("email") if isinstance(claims.get("email"), str) else None)
        issuer, subject = payload["iss"], str(payload["sub"])
        for _ in range(2):  # two first sign-ins of one person at once: the second finds the first's
            try:
                with transaction.atomic():
                    return self._sign_in(issuer, subject, claims)
            except IntegrityError:
                continue
        raise OidcRefused("retry", "the sign-in raced with another one: start again")

    def _sign_in(self, issuer: str, subject: str, claims: dict):
        identity = (OidcIdentity.objects.select_for_update().select_related("user")
                    .filter(issuer=issuer, subject=subject).first())
        if identity is None:
            user = self.UserModel(username=new_username(claims), **_profile(claims))
            user.set_unusable_password()  # signs in through the provider only
            user.save()
            identity = OidcIdentity.objects.create(user=user, issuer=issuer, subject=subject)
            log.info("single sign-on: created user %s for subject %s at %s", user.username, subject, issuer)
        else:
            user = identity.user
            profile = _profile(claims)
            changed = [field for field, value in profile.items() if value and getattr(user, field) != value]
            for field in changed:
                setattr(user, field, profile[field])
            if changed:
                user.save(update_fields=changed)
        if not user.is_active:
            raise OidcRefused("inactive", "this account is disabled: ask an operator", username=user.username)
        identity.last_login = timezone.now()
        identity.save(update_fields=["last_login"])
        sync_groups(user, claims)
        return user
