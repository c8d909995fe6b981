"""Single sign-on in a real browser: Playwright drives Debian's Chromium from the portal's
sign-in page to a real OpenID provider (django-oauth-toolkit's, a second process on
127.0.0.1: tests/oidc_support.py), through its sign-in and consent pages, back to the
portal's callback, and a session on the portal. Then a token made on the portal, sign-out
through the provider's end-session endpoint, and a changed groups claim moving the user
at the next sign-in. TT_OIDC_ONLY's refusals of passwords on the portal and the admin, and
the break-glass account let in.

These tests fail (never skip) when Playwright, Chromium or the provider is missing: the
provider fixture fails with its log.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connections
from playwright.sync_api import Page, expect, sync_playwright

from accounts.models import GroupQuota
from accounts.quotas import limits_for
from tests.conftest import make_user
from tests.oidc_support import configure_portal, provider  # noqa: F401

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture
def server(django_db_setup, live_server):
    # The test database first, so it is torn down after the session-wide live server.
    return live_server


@pytest.fixture
def page(monkeypatch):
    # As tests/browser/test_portal_flow.py: the ORM under Playwright's event loop, then closed.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium (tt.sh installs it)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(15_000)
        yield page
        browser.close()
        connections.close_all()


def snap(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"sso-{name}.png"), full_page=True)


def at_the_provider(page: Page, username: str, password: str) -> None:
    """The provider's sign-in page, then its consent page."""
    expect(page.locator("#op-sign-in")).to_be_visible()
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("#op-sign-in")
    expect(page.locator("input[name=allow]")).to_be_visible()
    snap(page, "consent")
    page.click("input[name=allow]")


def test_a_user_signs_in_through_the_provider_makes_a_token_signs_out_and_moves_group(
        server, page, provider, settings):  # noqa: F811
    base = server.url
    configure_portal(settings, provider, base)
    GroupQuota.objects.create(group=Group.objects.create(name="oidc:devs"), vms=7)
    GroupQuota.objects.create(group=Group.objects.create(name="oidc:ops"), vms=9)
    sub = provider.user("nina", "pw-nina-idp", groups=["devs"])

    # The portal's sign-in page offers the provider; the provider asks who and whether.
    page.goto(base + "/")
    expect(page).to_have_url(f"{base}/accounts/login/?next=/")
    sso_button = page.locator("#sso-sign-in")
    expect(sso_button).to_have_text("Sign in with Test IdP")
    snap(page, "sign-in")
    sso_button.click()
    at_the_provider(page, "nina", "pw-nina-idp")

    # Back on the portal, signed in, as a user made for the provider's subject.
    expect(page).to_have_url(base + "/")
    expect(page.locator("h1")).to_have_text("My Envs")
    expect(page.locator(".who")).to_contain_text("nina")
    nina = get_user_model().objects.get(oidc_identities__issuer=provider.issuer, oidc_identities__subject=sub)
    assert nina.username == "nina"
    assert set(nina.groups.values_list("name", flat=True)) == {"oidc:devs"}
    assert limits_for(nina)["vms"] == 7

    # An API token, made on the portal, works on the API.
    page.click("text=API tokens")
    page.fill("#id_name", "laptop")
    page.click("text=Create token")
    secret = page.locator("#token-secret").inner_text().strip()
    assert secret.startswith("ttp_")
    answer = requests.get(f"{base}/api/quota/", headers={"Authorization": f"Token {secret}"}, timeout=10)
    assert answer.status_code == 200, answer.text

    # Sign out: through the provider's end-session endpoint, back to the portal's sign-in page.
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    page.click("text=Sign out")
    expect(page).to_have_url(base + "/accounts/login/")
    ended = [url for url in seen if url.startswith(f"{provider.issuer}/logout/?")]
    assert ended and "id_token_hint=" in ended[0], seen

    # The provider moves nina to another group: the next sign-in moves her here. The
    # provider asks for her password again: its session ended with ours.
    provider.user("nina", "pw-nina-idp", groups=["ops"])
    page.click("#sso-sign-in")
    at_the_provider(page, "nina", "pw-nina-idp")
    expect(page).to_have_url(base + "/")
    assert set(nina.groups.values_list("name", flat=True)) == {"oidc:ops"}
    assert limits_for(nina)["vms"] == 9
    assert get_user_model().objects.filter(oidc_identities__subject=sub).count() == 1


def test_with_tt_oidc_only_passwords_are_refused_but_the_break_glass_account(
        server, page, provider, settings):  # noqa: F811
    base = server.url
    configure_portal(settings, provider, base, TT_OIDC_ONLY=True, TT_OIDC_BREAK_GLASS_USERS=["root"])
    make_user("alice")
    make_user("sam", is_staff=True, is_superuser=True)
    make_user("root", is_staff=True, is_superuser=True)
    refused = "Password sign-in is off on this site: sign in with Test IdP"

    page.goto(base + "/accounts/login/")
    expect(page.locator("#sso-sign-in")).to_be_visible()
    expect(page.locator("#id_username")).to_be_hidden()  # folded away, for operators
    page.click("text=Operator sign-in with a password")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click("form.stack button[type=submit]")
    expect(page.locator(".form-errors")).to_contain_text(refused)
    snap(page, "password-refused")

    page.goto(base + "/admin/login/?next=/admin/")
    expect(page.locator("text=Sign in with Test IdP")).to_be_visible()
    page.fill("#id_username", "sam")
    page.fill("#id_password", "pw-sam")
    page.click("input[type=submit]")
    expect(page.locator(".errornote")).to_contain_text(refused)

    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-root")
    page.click("input[type=submit]")
    expect(page).to_have_url(base + "/admin/")
