"""Single sign-on (accounts/oidc.py) against a real OpenID provider in a second process
(tests/oidc_support.py), at the HTTP level: the portal through Django's test client, the
provider through real HTTP (its sign-in and consent pages, its token, keys, user info and
end-session endpoints). The whole browser flow is tests/browser/test_sso.py."""

from __future__ import annotations

import base64
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.exceptions import SuspiciousOperation
from django.test import Client

from accounts import oidc
from accounts.models import GroupQuota
from accounts.quotas import limits_for
from tests.conftest import make_user
from tests.oidc_support import CLIENT_ID, configure_portal, provider, provider_sign_in, query  # noqa: F401

PORTAL = "http://testserver"


@pytest.fixture
def sso(settings, provider, db):  # noqa: F811
    configure_portal(settings, provider, PORTAL)
    return provider


@pytest.fixture
def signals():
    seen = {"in": [], "failed": []}

    def logged_in(sender, user, request, **kwargs):
        seen["in"].append(user.username)

    def failed(sender, credentials, request=None, **kwargs):
        seen["failed"].append(dict(credentials))

    user_logged_in.connect(logged_in)
    user_login_failed.connect(failed)
    yield seen
    user_logged_in.disconnect(logged_in)
    user_login_failed.disconnect(failed)


def start(client: Client, next_url: str = "") -> str:
    """The portal's "Sign in with" link: answers with the provider's authorization URL."""
    response = client.get("/oidc/authenticate/" + (f"?next={next_url}" if next_url else ""))
    assert response.status_code == 302, response.content[:300]
    return response["Location"]


def sign_in(client: Client, username: str, password: str, *, browser=None):
    authorize = start(client)
    callback, browser = provider_sign_in(authorize, username, password, browser)
    assert callback.startswith(f"{PORTAL}/oidc/callback/?")
    return client.get(callback.removeprefix(PORTAL)), browser


def groups_of(user) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


def test_the_first_sign_in_creates_the_user_by_subject_and_the_claim_sets_the_quota_group(sso, signals):
    devs = Group.objects.create(name="oidc:devs")
    GroupQuota.objects.create(group=devs, vms=33)
    Group.objects.create(name="oidc:ops")
    sub = sso.user("carol", "pw-carol-idp", groups=["devs", "not-managed-here"])
    client = Client()

    authorize = start(client, "/templates/")
    params = query(authorize)
    # The request carries a state, a nonce and a PKCE challenge; the client id and our callback.
    assert params["client_id"] == CLIENT_ID and params["redirect_uri"] == f"{PORTAL}/oidc/callback/"
    assert params["state"] and params["nonce"] and params["code_challenge_method"] == "S256"
    assert set(params["scope"].split()) == {"openid", "email", "profile"}
    callback, _ = provider_sign_in(authorize, "carol", "pw-carol-idp")
    response = client.get(callback.removeprefix(PORTAL))

    assert response.status_code == 302 and response["Location"] == "/templates/"
    carol = get_user_model().objects.get(oidc_identities__subject=sub)
    identity = carol.oidc_identities.get()
    assert (identity.issuer, identity.subject) == (sso.issuer, sub)
    assert carol.username == "carol" and carol.email == "carol@idp.example"
    assert not carol.has_usable_password() and not carol.is_staff and not carol.is_superuser
    assert groups_of(carol) == {"oidc:devs"}  # "oidc:not-managed-here" does not exist: not made
    assert limits_for(carol)["vms"] == 33
    assert signals == {"in": ["carol"], "failed": []}
    assert client.get("/").status_code == 200  # signed in
    assert client.session["oidc_id_token"]  # the logout's id_token_hint


def test_a_changed_claim_moves_the_user_at_the_next_sign_in_and_leaves_local_groups(sso):
    for name in ("oidc:devs", "oidc:ops", "local-team"):
        Group.objects.create(name=name)
    sso.user("erin", "pw-erin-idp", groups=["devs"])
    response, _ = sign_in(Client(), "erin", "pw-erin-idp")
    assert response.status_code == 302
    erin = get_user_model().objects.get(username="erin")
    erin.groups.add(Group.objects.get(name="local-team"))  # an operator's, by hand
    assert groups_of(erin) == {"oidc:devs", "local-team"}

    sso.user("erin", "pw-erin-idp", groups=["ops"])
    response, _ = sign_in(Client(), "erin", "pw-erin-idp")
    assert response.status_code == 302
    assert groups_of(erin) == {"oidc:ops", "local-team"}
    assert get_user_model().objects.filter(username__startswith="erin").count() == 1

    sso.user("erin", "pw-erin-idp", groups=[])
    sign_in(Client(), "erin", "pw-erin-idp")
    assert groups_of(erin) == {"local-team"}


def test_a_local_account_with_the_same_name_and_email_is_never_taken_over(sso):
    dave = make_user("dave", email="dave@idp.example")
    sso.user("dave", "pw-dave-idp", email="dave@idp.example")
    client = Client()
    response, _ = sign_in(client, "dave", "pw-dave-idp")
    assert response.status_code == 302
    created = get_user_model().objects.get(oidc_identities__issuer=sso.issuer, username__startswith="dave-")
    assert created.username == "dave-2" and created.pk != dave.pk
    assert not dave.oidc_identities.exists()
    assert client.get("/").context["user"].username == "dave-2"


def test_a_tampered_state_is_refused(sso, signals):
    sso.user("frank", "pw-frank-idp")
    client = Client()
    callback, _ = provider_sign_in(start(client), "frank", "pw-frank-idp")
    params = query(callback)
    response = client.get("/oidc/callback/", {"code": params["code"], "state": params["state"] + "x"})
    assert response.status_code == 400
    assert b'data-reason="state"' in response.content
    assert b"not one this browser started" in response.content
    assert not get_user_model().objects.filter(username="frank").exists()
    assert signals["failed"] == [{"oidc": "state"}] and signals["in"] == []
    # A callback replayed in another browser (no state in its session) is refused alike.
    assert Client().get(callback.removeprefix(PORTAL)).status_code == 400


def test_a_used_state_is_refused_the_second_time(sso):
    sso.user("gina", "pw-gina-idp")
    client = Client()
    callback, _ = provider_sign_in(start(client), "gina", "pw-gina-idp")
    assert client.get(callback.removeprefix(PORTAL)).status_code == 302
    again = client.get(callback.removeprefix(PORTAL))
    assert again.status_code == 400 and b'data-reason="state"' in again.content


def test_a_tampered_nonce_is_refused(sso, signals):
    sso.user("hank", "pw-hank-idp")
    client = Client()
    authorize = start(client)
    nonce = query(authorize)["nonce"]
    # The browser (or someone on its way) changes the nonce: the provider signs what it was given.
    tampered = authorize.replace(f"nonce={nonce}", "nonce=tampered")
    callback, _ = provider_sign_in(tampered, "hank", "pw-hank-idp")
    response = client.get(callback.removeprefix(PORTAL))
    assert response.status_code == 400
    assert b'data-reason="token_invalid"' in response.content and b"Nonce" in response.content
    assert not get_user_model().objects.filter(username="hank").exists()
    assert signals["failed"] == [{"oidc": "token_invalid"}]
    assert "oidc_id_token" not in client.session  # a refused sign-in keeps nothing


def test_an_answer_with_an_error_is_refused_with_the_providers_words(sso, signals):
    client = Client()
    state = query(start(client))["state"]
    response = client.get("/oidc/callback/", {"state": state, "error": "access_denied",
                                              "error_description": "The user said no"})
    assert response.status_code == 400 and b"access_denied: The user said no" in response.content
    assert signals["failed"] == [{"oidc": "provider_error"}]
    assert state not in client.session["oidc_states"]


def test_a_disabled_user_is_signed_out_and_refused(sso, signals):
    sso.user("ivan", "pw-ivan-idp")
    client = Client()
    sign_in(client, "ivan", "pw-ivan-idp")
    assert client.get("/").status_code == 200
    get_user_model().objects.filter(username="ivan").update(is_active=False)
    assert client.get("/").status_code == 302  # the session no longer signs them in
    response, _ = sign_in(Client(), "ivan", "pw-ivan-idp")
    assert response.status_code == 403 and b"disabled" in response.content
    assert signals["failed"] == [{"oidc": "inactive", "username": "ivan"}]


def test_sign_out_ends_the_providers_session(sso):
    sso.user("judy", "pw-judy-idp")
    client = Client()
    response, browser = sign_in(client, "judy", "pw-judy-idp")
    assert response.status_code == 302
    id_token = client.session["oidc_id_token"]

    response = client.post("/accounts/logout/")
    end_session = response["Location"]
    assert end_session.startswith(f"{sso.issuer}/logout/?")
    assert query(end_session) == {"id_token_hint": id_token, "client_id": CLIENT_ID,
                                  "post_logout_redirect_uri": f"{PORTAL}/accounts/login/"}
    assert client.get("/").status_code == 302  # the portal's session is gone
    # The browser follows: the provider ends its session and sends it back to our sign-in page.
    back = browser.get(end_session, allow_redirects=False, timeout=10)
    assert back.status_code == 302 and back.headers["Location"] == f"{PORTAL}/accounts/login/"
    # The provider asks for the password again.
    again = browser.get(start(Client()), timeout=10)
    assert "op-sign-in" in again.text


def test_sign_out_of_a_password_session_stays_on_the_portal(sso, alice):
    client = Client()
    client.force_login(alice)
    assert client.post("/accounts/logout/")["Location"] == "/accounts/login/"


def test_the_token_page_works_for_a_user_who_signed_in_through_the_provider(sso):
    sso.user("kim", "pw-kim-idp")
    client = Client()
    sign_in(client, "kim", "pw-kim-idp")
    response = client.post("/tokens/", {"name": "ci", "expires_in_days": 7})
    assert response.status_code == 200
    secret = response.context["secret"]
    api = Client().get("/api/quota/", HTTP_AUTHORIZATION=f"Token {secret}")
    assert api.status_code == 200


def test_tt_oidc_only_refuses_passwords_but_the_break_glass_accounts(sso, settings, signals):
    settings.TT_OIDC_ONLY = True
    settings.TT_OIDC_BREAK_GLASS_USERS = ["root"]
    make_user("alice", email="a@example.com")
    make_user("sam", is_staff=True, is_superuser=True)
    make_user("root", is_staff=True, is_superuser=True)
    said = b"Password sign-in is off on this site: sign in with Test IdP"

    page = Client().get("/accounts/login/")
    assert b"Sign in with Test IdP" in page.content and b"break-glass" in page.content
    refused = Client().post("/accounts/login/", {"username": "alice", "password": "pw-alice"})
    assert refused.status_code == 200 and said in refused.content
    assert "_auth_user_id" not in refused.wsgi_request.session
    admin = Client().post("/admin/login/?next=/admin/", {"username": "sam", "password": "pw-sam",
                                                        "next": "/admin/"})
    assert admin.status_code == 200 and said in admin.content
    api = Client().post("/api/tokens/", {"name": "x"}, content_type="application/json",
                        HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"alice:pw-alice").decode())
    assert api.status_code == 401 and "Password sign-in is off" in api.json()["message"], api.json()
    assert [c.get("username") for c in signals["failed"]] == ["alice", "sam", "alice"]

    # The break-glass account signs in with its password: portal, admin, API.
    assert Client().post("/accounts/login/", {"username": "root", "password": "pw-root"}).status_code == 302
    admin = Client().post("/admin/login/?next=/admin/", {"username": "root", "password": "pw-root",
                                                        "next": "/admin/"})
    assert admin.status_code == 302 and admin["Location"] == "/admin/"
    api = Client().post("/api/tokens/", {"name": "x"}, content_type="application/json",
                        HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"root:pw-root").decode())
    assert api.status_code == 201


def test_without_configuration_single_sign_on_is_off(settings, db, alice):
    settings.TT_OIDC_ISSUER = ""
    assert Client().get("/oidc/authenticate/").status_code == 404
    assert Client().get("/oidc/callback/?code=x&state=y").status_code == 404
    assert b"Sign in with" not in Client().get("/accounts/login/").content
    assert Client().post("/accounts/login/", {"username": "alice", "password": "pw-alice"}).status_code == 302


def test_an_unreachable_provider_is_a_clear_refusal(settings, db):
    settings.TT_OIDC_ISSUER = "http://127.0.0.1:9/nothing"  # the discard port: nobody there
    settings.TT_OIDC_CLIENT_ID = "x"
    settings.TT_OIDC_CLIENT_SECRET = "y"
    oidc.forget_discovery()
    response = Client().get("/oidc/authenticate/")
    assert response.status_code == 503 and b"cannot be reached" in response.content


# --- The ID token's checks, with a key of our own -------------------------------------------

ISSUER = "https://id.example.com/realms/tt"


@pytest.fixture
def backend(settings):
    settings.TT_OIDC_ISSUER = ISSUER
    settings.TT_OIDC_CLIENT_ID = "portal"
    found = oidc.OidcBackend()
    found.provider = oidc.Provider(issuer=ISSUER, authorization_endpoint="a", token_endpoint="t",
                                   userinfo_endpoint="u", jwks_uri="j", end_session_endpoint="")
    found.OIDC_RP_CLIENT_ID = "portal"
    found.OIDC_RP_SIGN_ALGO = "RS256"
    return found


KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(alg="RS256", key=KEY, **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": "portal", "sub": "s-1", "iat": now, "exp": now + 300, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg)


def test_a_good_id_token_passes(backend):
    assert backend._verify_jws(token(), KEY.public_key())["sub"] == "s-1"
    assert backend._verify_jws(token(aud=["portal", "other"], azp="portal"), KEY.public_key())


@pytest.mark.parametrize(("claims", "why"), [
    ({"iss": "https://evil.example.com"}, "InvalidIssuerError"),
    ({"aud": "another-client"}, "InvalidAudienceError"),
    ({"aud": ["portal", "other"]}, "azp"),
    ({"exp": int(time.time()) - 3600}, "ExpiredSignatureError"),
    ({"iss": None}, "MissingRequiredClaimError"),
    ({"aud": None}, "MissingRequiredClaimError"),
])
def test_an_id_token_for_another_issuer_or_client_or_out_of_date_is_refused(backend, claims, why):
    with pytest.raises(SuspiciousOperation, match=why):
        backend._verify_jws(token(**claims), KEY.public_key())


def test_an_id_token_signed_otherwise_is_refused(backend):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(SuspiciousOperation, match="InvalidSignatureError"):
        backend._verify_jws(token(key=other), KEY.public_key())
    with pytest.raises(SuspiciousOperation, match="not RS256"):
        backend._verify_jws(token(alg="HS256", key="portal-secret-of-at-least-32-bytes!"), KEY.public_key())
    unsigned = jwt.encode({"iss": ISSUER, "aud": "portal", "sub": "s"}, None, algorithm="none")
    with pytest.raises(SuspiciousOperation, match="not RS256"):
        backend._verify_jws(unsigned, KEY.public_key())


def test_group_values_come_from_lists_strings_and_nested_claims(settings):
    settings.TT_OIDC_GROUPS_CLAIM = "groups"
    assert oidc.claim_groups({"groups": ["a", "b", 3, ""]}) == {"a", "b"}
    assert oidc.claim_groups({"groups": "a"}) == {"a"}
    assert oidc.claim_groups({}) == set()
    settings.TT_OIDC_GROUPS_CLAIM = "realm_access.roles"
    assert oidc.claim_groups({"realm_access": {"roles": ["x"]}}) == {"x"}


def test_new_usernames_are_cleaned_and_never_an_existing_one(settings, db):
    settings.TT_OIDC_USERNAME_CLAIM = "preferred_username"
    make_user("zoe")
    make_user("zoe-2")
    assert oidc.new_username({"preferred_username": "Zoe"}) == "Zoe-3"  # case-insensitively taken
    assert oidc.new_username({"preferred_username": "a b/c"}) == "abc"
    assert oidc.new_username({"email": "x.y@example.com"}) == "x.y"
    assert oidc.new_username({}) == "user"


def test_the_provider_is_discovered_and_its_issuer_must_match(sso, settings):
    found = oidc.provider()
    assert found.issuer == sso.issuer and found.end_session_endpoint == f"{sso.issuer}/logout/"
    settings.TT_OIDC_ISSUER = sso.issuer + "/"  # not what the provider calls itself
    oidc.forget_discovery()
    with pytest.raises(oidc.ProviderUnavailable, match="names the issuer"):
        oidc.provider()
    assert requests.get(f"{sso.issuer}/.well-known/openid-configuration", timeout=5).ok


def test_tt_oidc_hosted_domains_lets_in_only_those_workspace_domains(backend, settings, db, monkeypatch):
    settings.TT_OIDC_HOSTED_DOMAINS = ["example.com"]
    claims = {"iss": ISSUER, "sub": "g-1", "email": "x@gmail.com"}
    monkeypatch.setattr(backend, "get_userinfo", lambda *args: {"sub": "g-1"})
    with pytest.raises(oidc.OidcRefused, match=r"only accounts of example\.com") as refused:
        backend.get_or_create_user("access", "id", claims)
    assert refused.value.reason == "domain"
    claims.update(hd="example.com", email="x@example.com")
    user = backend.get_or_create_user("access", "id", claims)
    assert user.oidc_identities.get().subject == "g-1" and user.username == "x"
