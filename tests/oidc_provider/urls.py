"""The test provider: django-oauth-toolkit's endpoints under /o/ (the issuer), its own
sign-in page, and /control/ for the tests to set users and the client (a bearer token)."""

import json
import os

from django.contrib.auth import views as auth_views
from django.contrib.auth.models import Group, User
from django.http import HttpResponseForbidden, JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.models import get_application_model


def _allowed(request) -> bool:
    return request.headers.get("Authorization") == f"Bearer {os.environ['OP_CONTROL_TOKEN']}"


@csrf_exempt
def control_user(request):
    """POST {username, password, email, groups}: make or change a user of the provider."""
    if not _allowed(request) or request.method != "POST":
        return HttpResponseForbidden()
    data = json.loads(request.body)
    user, _ = User.objects.get_or_create(username=data["username"])
    user.email = data.get("email", "")
    user.first_name = data.get("first_name", "")
    user.set_password(data["password"])
    user.save()
    user.groups.set([Group.objects.get_or_create(name=name)[0] for name in data.get("groups", [])])
    return JsonResponse({"id": user.pk, "sub": str(user.pk)})


@csrf_exempt
def control_client(request):
    """POST {client_id, client_secret, redirect_uri, post_logout_redirect_uri}: the portal."""
    if not _allowed(request) or request.method != "POST":
        return HttpResponseForbidden()
    data = json.loads(request.body)
    Application = get_application_model()
    Application.objects.filter(client_id=data["client_id"]).delete()
    Application.objects.create(
        name="TT Portal", client_id=data["client_id"], client_secret=data["client_secret"],
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=data["redirect_uri"], post_logout_redirect_uris=data["post_logout_redirect_uri"],
        algorithm=Application.RS256_ALGORITHM, skip_authorization=False,
    )
    return JsonResponse({"ok": True})


urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("control/user", control_user),
    path("control/client", control_client),
]
