"""The portal's API tokens page (list, create: the secret is shown once, revoke) and
SSH keys page (list, add, delete). Signing in and out: the password form, and single
sign-on through an OpenID provider (accounts/oidc.py).

Thin: accounts.services does the work, the same functions the API calls. The
secret exists only in the response to the POST that created it: it is never
stored, put in the session or a flash message, logged, or shown again.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import auth, messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.signals import user_login_failed
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_http_methods, require_POST
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from accounts import oidc, services
from accounts.forms import PasswordSignInForm, SshKeyForm, TokenForm
from accounts.models import ApiToken, SshKey
from ttportal.errors import InvalidInput, RateLimited
from ttportal.portal import rate_limited


def _page(request: HttpRequest, form: TokenForm, **extra) -> HttpResponse:
    tokens = list(ApiToken.objects.visible_to(request.user))
    now = timezone.now()
    for token in tokens:
        token.expired = token.is_expired(now)
    return render(request, "accounts/tokens.html", {"tokens": tokens, "form": form, **extra})


@never_cache  # the answer to a create holds the secret: no cache may keep it
@login_required
@require_http_methods(["GET", "POST"])
@sensitive_variables("secret")
def token_list(request: HttpRequest) -> HttpResponse:
    """Your tokens, and the create form; a successful create shows its secret on this answer only."""
    if request.method != "POST":
        return _page(request, TokenForm())
    form = TokenForm(request.POST)
    if form.is_valid():
        try:
            token, secret = services.token_create(user=request.user, name=form.cleaned_data["name"],
                                                  expires_in=form.expires_in())
        except InvalidInput as exc:
            field = {"name": "name", "expires_in": "expires_in_days"}.get(exc.field or "")
            form.add_error(field, exc.message)
        except RateLimited as exc:
            return rate_limited(request, exc, reverse("accounts:tokens"))
        else:
            # Rendered, not redirected: the secret must not survive this response.
            return _page(request, TokenForm(), new_token=token, secret=secret)
    return _page(request, form)


@require_POST
@login_required
def token_revoke(request: HttpRequest, pk: str) -> HttpResponse:
    token = get_object_or_404(ApiToken.objects.visible_to(request.user), public_id=pk)
    services.token_revoke(token=token, by=request.user)
    messages.success(request, f"Revoked the token {token.name}: it no longer works.")
    return HttpResponseRedirect(reverse("accounts:tokens"))


def _keys_page(request: HttpRequest, form: SshKeyForm) -> HttpResponse:
    keys = SshKey.objects.filter(user=request.user)
    return render(request, "accounts/ssh_keys.html", {"keys": keys, "form": form})


@login_required
@require_http_methods(["GET", "POST"])
def ssh_key_list(request: HttpRequest) -> HttpResponse:
    """Your SSH keys, and the form to add one."""
    if request.method != "POST":
        return _keys_page(request, SshKeyForm())
    form = SshKeyForm(request.POST)
    if form.is_valid():
        try:
            key = services.ssh_key_add(user=request.user, public_key=form.cleaned_data["public_key"],
                                       name=form.cleaned_data["name"])
        except InvalidInput as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, f"Added the key {key.name} ({key.fingerprint}): VMs made from now on "
                             "let you in as tt with it.")
            return HttpResponseRedirect(reverse("accounts:ssh_keys"))
    return _keys_page(request, form)


@require_POST
@login_required
def ssh_key_delete(request: HttpRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(SshKey.objects.filter(user=request.user), pk=pk)
    services.ssh_key_delete(key=key, by=request.user)
    messages.success(request, f"Deleted the key {key.name}: VMs made from now on no longer get it.")
    return HttpResponseRedirect(reverse("accounts:ssh_keys"))


# --- Signing in and out --------------------------------------------------------------------

class LoginView(auth_views.LoginView):
    """The sign-in page: "Sign in with <provider>" when single sign-on is on, and the
    password form (under TT_OIDC_ONLY folded away, for the break-glass accounts)."""

    form_class = PasswordSignInForm
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    """Signs out of the portal and, for a session that came from the provider, of the
    provider too where it offers RP-initiated logout (its end_session_endpoint), which
    sends the browser back to the sign-in page."""

    def post(self, request, *args, **kwargs):
        end_session = oidc.end_session_url(request)  # before the session, and its ID token, go
        response = super().post(request, *args, **kwargs)
        return HttpResponseRedirect(end_session) if end_session else response


def sso_refused(request: HttpRequest, reason: str, message: str, *, username: str | None = None,
                status: int = 400, signal: bool = True) -> HttpResponse:
    """A refused single sign-on: user_login_failed once (credentials {"oidc": reason} and the
    username when known: never a code, token or nonce), and a page saying why."""
    if signal:
        credentials = {"oidc": reason}
        if username:
            credentials["username"] = username
        user_login_failed.send(sender=__name__, credentials=credentials, request=request)
    return render(request, "registration/sso_failed.html", {"reason": reason, "message": message},
                  status=status)


class OidcStart(OIDCAuthenticationRequestView):
    """GET /oidc/authenticate/?next=…: to the provider's authorization endpoint, with a
    fresh state, nonce and PKCE challenge kept in the session."""

    get_settings = staticmethod(oidc.mozilla_setting)

    def __init__(self, **kwargs):
        # mozilla-django-oidc reads the endpoint here; ours may need the provider: in get().
        super(OIDCAuthenticationRequestView, self).__init__(**kwargs)

    def get(self, request):
        if not oidc.enabled():
            raise Http404("single sign-on is not configured")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = oidc.provider().authorization_endpoint
        except oidc.ProviderUnavailable as exc:
            return sso_refused(request, "provider_unavailable",
                               f"{settings.TT_OIDC_PROVIDER_NAME} cannot be reached: {exc}",
                               status=503, signal=False)
        self.OIDC_RP_CLIENT_ID = settings.TT_OIDC_CLIENT_ID
        return super().get(request)


class OidcCallback(OIDCAuthenticationCallbackView):
    """GET /oidc/callback/?code=…&state=…: the provider's answer. The state must be one
    this browser's session started (each used once), then the backend (accounts/oidc.py)
    trades the code (with the PKCE verifier) for tokens and checks the ID token, its nonce
    included."""

    get_settings = staticmethod(oidc.mozilla_setting)

    def get(self, request):
        if not oidc.enabled():
            raise Http404("single sign-on is not configured")
        states = request.session.get("oidc_states")
        states = states if isinstance(states, dict) else {}
        state = request.GET.get("state")
        again = "Start again from the sign-in page."
        if request.GET.get("error"):
            if state in states:  # used: never again
                del states[state]
                request.session["oidc_states"] = states
            error = request.GET.get("error", "")[:100]
            described = request.GET.get("error_description", "")[:300]
            return sso_refused(request, "provider_error", f"{settings.TT_OIDC_PROVIDER_NAME} answered "
                               f"{error}{': ' + described if described else ''}. {again}")
        if not state or not request.GET.get("code"):
            return sso_refused(request, "bad_callback", f"The answer has no code or no state. {again}")
        if state not in states:
            return sso_refused(request, "state", "The answer's state is not one this browser started "
                               f"(or it was used already). {again}")
        flow = states.pop(state)
        request.session["oidc_states"] = states
        request.session.save()
        # As mozilla-django-oidc does: read the session again after the slow exchange, so a
        # login in another tab meanwhile is not overwritten.
        request.session = request.session.__class__(request.session.session_key)
        request.oidc_flow = flow
        try:
            user = auth.authenticate(request=request, oidc=True)
        except oidc.OidcRefused as exc:
            status = 403 if exc.reason == "inactive" else 503 if exc.reason == "provider_unavailable" else 400
            return sso_refused(request, exc.reason, f"{exc.message.rstrip('.')}. {again}",
                               username=exc.username, status=status)
        if user is None:
            # authenticate() sent user_login_failed already (django-axes' lockout, say).
            if getattr(request, "axes_locked_out", False):
                from accounts.lockout import locked_out_response

                return locked_out_response(request)
            return sso_refused(request, "refused", f"The sign-in was refused. {again}", signal=False)
        self.user = user
        response = self.login_success()
        # After login() (which may flush the session): the logout's id_token_hint.
        request.session["oidc_id_token"] = getattr(request, "oidc_id_token", None)
        return response
